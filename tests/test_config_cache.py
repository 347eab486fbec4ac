"""The configuration every process caches (`handlers.core.config_cache`) follows a manager's change:
made through one `memberbot serve` process, it is what the very next request of the other one uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.settings import Settings
from handlers.core import config_cache
from handlers.staff.accounts import create_staff
from tests.conftest import real_redis
from tests.support.factories import make_member, make_merchant
from tests.test_two_processes import PASSWORD, post, servers, wait_healthy
from webhooks.appkeys import REDIS

pytestmark = [real_redis, pytest.mark.slow]


async def put(session: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.put(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
        payload: dict[str, Any] = await response.json()
        assert response.status == 200, payload
        return payload


async def test_a_change_through_one_process_is_seen_by_the_next_request_of_the_other(
    client: Any, settings: Settings, tmp_path: Path
) -> None:
    merchant = await make_merchant()
    member = await make_member(merchant)
    await create_staff(merchant, store_code="main", username="till", role="cashier", password=PASSWORD)
    await create_staff(merchant, store_code=None, username="boss", role="admin", password=PASSWORD)
    with servers(settings, tmp_path, 2) as (first, second):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            for url in (first, second):
                await wait_healthy(http, url, tmp_path)

            async def login(username: str) -> str:
                body = {"merchant": merchant.slug, "username": username, "password": PASSWORD}
                return str((await post(http, f"{first}/api/staff/login", "", body))["token"])

            till, boss = await login("till"), await login("boss")

            async def buy(url: str, key: str) -> dict[str, Any]:
                body = {"idempotency_key": key, "member_id": member.id, "amount_fen": 10_000}
                return await post(http, f"{url}/api/staff/purchases", till, body)

            for url in (first, second):  # both processes now cache the defaults: 1 point per yuan, at once
                warm = await buy(url, f"warm-{url[-5:]}")
                assert (warm["points_earned"], warm["points_pending"]) == (100, False)
            await put(http, f"{first}/api/admin/program", boss, {"program": {"pending_days": 7}})
            assert (await buy(second, "after-program"))["points_pending"] is True
            await put(http, f"{second}/api/admin/rules", boss, {"rules": {"points_per_yuan": 3}})
            after_rules = await buy(first, "after-rules")
            assert (after_rules["points_earned"], after_rules["rule_set_version"]) == (300, 2)
    assert int(await client.app[REDIS].get(config_cache.KEY)) > 0  # announced through Redis
