"""Two real `memberbot serve` processes on one PostgreSQL + Redis: 5,000 concurrent flash-sale attempts
from 1,000 members for 100 units sell exactly 100, nobody over the limit, the ledger exact."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.settings import Settings
from handlers.loyalty import ledger
from handlers.mall import flash
from handlers.mall.catalogue import ItemInput, create_item
from handlers.staff.sessions import SessionKind, SessionStore
from models.mall import FlashSale, ItemKind, MallItem, MallOrder
from models.member import Member
from models.points import PointsAccount, PointsKind
from tests.conftest import real_redis
from tests.support.factories import make_merchant
from tests.test_two_processes import ROOT, server_env, servers, wait_healthy
from webhooks.appkeys import REDIS

pytestmark = [real_redis, pytest.mark.slow]
MEMBERS = 1_000
ATTEMPTS = 5_000
UNITS = 100
LIMIT = 2
PRICE = 150
START_POINTS = 1_000


async def seed_members(merchant_id: int) -> list[int]:
    now = datetime.now(UTC)
    await Member.bulk_create(
        [
            Member(
                merchant_id=merchant_id,
                code=f"F{n:07d}",
                openid=f"o-flash-{n:05d}",
                subscribed=True,
                registered_at=now,
            )
            for n in range(MEMBERS)
        ]
    )
    ids: list[int] = (
        await Member.filter(merchant_id=merchant_id)
        .order_by("id")
        .values_list(  # type: ignore[assignment]
            "id", flat=True
        )
    )
    for member_id in ids:
        await ledger.credit(
            merchant_id,
            member_id,
            START_POINTS,
            PointsKind.GRANT,
            key=f"seed:{member_id}",
            now=now,
            expires_at=None,
        )
    return ids


async def test_flash_sale_across_two_processes_sells_exactly_the_units(
    client: Any, settings: Settings, tmp_path: Path
) -> None:
    merchant = await make_merchant()
    item = await create_item(
        merchant,
        ItemKind.PICKUP,
        ItemInput(name="秒杀耳机", price_points=900),
        stock=UNITS + 20,
        actor="test",
    )
    now = datetime.now(UTC)
    spec = flash.SaleSpec(
        item_id=item.id,
        price_points=PRICE,
        stock=UNITS,
        limit_per_member=LIMIT,
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(hours=1),
    )
    sale = await flash.create_sale(merchant.id, spec, now=now, actor="test")
    member_ids = await seed_members(merchant.id)
    store = SessionStore(client.app[REDIS])
    tokens = [(await store.issue(SessionKind.MEMBER, merchant.id, m)).token for m in member_ids]
    # Each member tries 5 times: 4 keys of their own, and their first key again on the other process.
    plan = [(n % MEMBERS, f"k{n // MEMBERS if n < 4 * MEMBERS else 0}", n) for n in range(ATTEMPTS)]

    with servers(settings, tmp_path, 2) as urls:
        connector = aiohttp.TCPConnector(limit=256)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            for url in urls:
                await wait_healthy(http, url, tmp_path)

            async def attempt(member: int, key: str, n: int) -> tuple[int, int, dict[str, Any]]:
                path = f"{urls[n % 2]}/api/mp/{merchant.slug}/mall/flash-sales/{sale.id}/buy"
                headers = {"Authorization": f"Bearer {tokens[member]}"}
                async with http.post(path, json={"idempotency_key": key}, headers=headers) as response:
                    return member, response.status, await response.json()

            results = await asyncio.gather(*(attempt(*step) for step in plan))

    statuses = Counter(status for _, status, _ in results)
    assert set(statuses) <= {200, 409}, [body for _, status, body in results if status not in (200, 409)][:3]
    fresh = [(member, body) for member, status, body in results if status == 200 and not body["replayed"]]
    assert len(fresh) == UNITS
    refusals = Counter(body["error"]["message"] for _, status, body in results if status == 409)
    assert set(refusals) <= {"已抢光", f"每人限购 {LIMIT} 件"}, refusals

    orders = await MallOrder.filter(flash_sale_id=sale.id).values_list("member_id", flat=True)
    assert len(orders) == UNITS
    assert max(Counter(orders).values()) <= LIMIT
    assert sorted(o["order_id"] for _, o in fresh) == sorted(
        await MallOrder.filter(flash_sale_id=sale.id).values_list("id", flat=True)
    )
    assert (await FlashSale.get(id=sale.id)).sold == UNITS
    assert (await MallItem.get(id=item.id)).stock == 20
    spent = sum(START_POINTS - a.balance for a in await PointsAccount.filter(merchant_id=merchant.id))
    assert spent == UNITS * PRICE
    assert int(await client.app[REDIS].get(flash.gate_keys(sale.id)[0])) == 0

    audit = subprocess.run(  # noqa: ASYNC221 - a short CLI run after the load
        [sys.executable, "-m", "bot", "audit", "points"],
        env=server_env(settings, 1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "0 mismatches" in audit.stdout
