"""Two real `memberbot serve` processes: members buy on both while an admin ends the sale through one.
Once "end now" has answered, no attempt on either process succeeds — each had read the sale while it was
open and keeps its terms — and the orders, the sale's count and the points ledger agree exactly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.settings import Settings
from handlers.loyalty.ledger_audit import audit_points
from handlers.mall import flash
from handlers.mall.catalogue import ItemInput, create_item
from handlers.staff.accounts import create_staff
from handlers.staff.sessions import SessionKind, SessionStore
from models.loyalty import AuditLog
from models.mall import FlashSale, ItemKind, MallOrder
from models.points import PointsAccount
from tests.conftest import real_redis
from tests.support.factories import make_merchant
from tests.test_flash_two_processes import START_POINTS, seed_members
from tests.test_two_processes import servers, wait_healthy
from webhooks.appkeys import REDIS

pytestmark = [real_redis, pytest.mark.slow]
PRICE = 10
AFTER_END = 400


async def test_ending_a_sale_stops_both_processes_at_once(
    client: Any, settings: Settings, tmp_path: Path
) -> None:
    merchant = await make_merchant()
    item = await create_item(
        merchant, ItemKind.PICKUP, ItemInput(name="秒杀耳机", price_points=900), stock=5_000, actor="t"
    )
    now = datetime.now(UTC)
    spec = flash.SaleSpec(item.id, PRICE, 5_000, 50, now - timedelta(minutes=1), now + timedelta(hours=1))
    sale = await flash.create_sale(merchant.id, spec, now=now, actor="test")
    member_ids = (await seed_members(merchant.id))[:200]
    store = SessionStore(client.app[REDIS])
    tokens = [(await store.issue(SessionKind.MEMBER, merchant.id, m)).token for m in member_ids]
    await create_staff(merchant, store_code="main", username="boss", role="admin", password="correct-horse-1")

    with servers(settings, tmp_path, 2) as urls:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128)) as http:
            for url in urls:
                await wait_healthy(http, url, tmp_path)
            login = {"merchant": merchant.slug, "username": "boss", "password": "correct-horse-1"}
            async with http.post(f"{urls[0]}/api/staff/login", json=login) as response:
                admin = {"Authorization": f"Bearer {(await response.json())['token']}"}
            ended, selling = asyncio.Event(), asyncio.Event()
            bought = [0]

            async def attempt(n: int, key: str) -> tuple[bool, int, dict[str, Any]]:
                started_after_end = ended.is_set()
                path = f"{urls[n % 2]}/api/mp/{merchant.slug}/mall/flash-sales/{sale.id}/buy"
                headers = {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}
                async with http.post(path, json={"idempotency_key": key}, headers=headers) as response:
                    body = await response.json()
                bought[0] += response.status == 200
                if bought[0] >= 300:  # both processes are selling
                    selling.set()
                return started_after_end, response.status, body

            async def buyer(n: int) -> list[tuple[bool, int, dict[str, Any]]]:
                results = []
                for round_ in range(1_000):
                    results.append(await attempt(n, f"r{round_}"))
                    if ended.is_set() and sum(r[0] for r in results) >= 2:
                        return results
                return results

            buyers = [asyncio.create_task(buyer(n)) for n in range(len(tokens))]
            await asyncio.wait_for(selling.wait(), 120)
            # The admin's own browser: not queued behind the buyers' connections in `http`'s pool.
            async with (
                aiohttp.ClientSession() as office,
                office.post(f"{urls[0]}/api/admin/mall/flash-sales/{sale.id}/end", headers=admin) as response,
            ):
                assert response.status == 200, await response.text()
            ended.set()
            during = [r for results in await asyncio.gather(*buyers) for r in results]
            late = await asyncio.gather(*(attempt(n, f"late{n}") for n in range(AFTER_END)))

    after_end = [r for r in during if r[0]] + list(late)
    assert len(after_end) >= AFTER_END
    assert {status for _, status, _ in after_end} == {409}
    assert {body["error"]["message"] for _, _, body in after_end} == {"秒杀已结束"}
    before_end = [r for r in during if not r[0]]
    assert {status for _, status, _ in before_end} <= {200, 409}
    fresh = sum(1 for _, status, body in before_end if status == 200 and not body["replayed"])

    row = await FlashSale.get(id=sale.id)
    orders = await MallOrder.filter(flash_sale_id=sale.id)
    assert row.sold == len(orders) == fresh and 300 <= row.sold < 5_000
    assert all(order.created_at < row.ends_at for order in orders)
    spent = sum(START_POINTS - a.balance for a in await PointsAccount.filter(merchant_id=merchant.id))
    assert spent == PRICE * row.sold
    [entry] = await AuditLog.filter(action="flash_sale.end")
    assert entry.detail["sold"] == row.sold
    assert await audit_points() == []
