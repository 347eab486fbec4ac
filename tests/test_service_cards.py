"""Count and time cards: products, sale, grant, use by card or by scan, refusals, concurrency, views."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from handlers.core.errors import DomainError, ErrorCode
from handlers.rules import cardtoken
from handlers.staff.sessions import SessionKind, SessionStore
from handlers.wallet import service_cards
from models.cards import CardUse, MemberCard
from models.loyalty import AuditLog
from models.member import Member
from models.merchant import Merchant
from tests.conftest import SECRET
from tests.support.factories import make_member, make_merchant, staff_headers
from webhooks.appkeys import REDIS

COUNT = {
    "kind": "count",
    "name": "洗剪吹10次卡",
    "service": "洗剪吹",
    "uses": 3,
    "valid_days": 30,
    "price_fen": 30_000,
}
TIME = {"kind": "time", "name": "健身月卡", "service": "健身", "valid_days": 30, "price_fen": 20_000}


@pytest.fixture
async def shop(client: TestClient) -> tuple[Merchant, Member, dict[str, dict[str, str]]]:
    merchant = await make_merchant()
    member = await make_member(merchant)
    roles = {role: await staff_headers(client, merchant, role) for role in ("cashier", "manager", "admin")}
    return merchant, member, roles


async def product(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> int:
    response = await client.post("/api/admin/service-cards/products", json=body, headers=headers)
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


async def sell(client: TestClient, shop: Any, product_id: int, key: str = "s1") -> Any:
    _, member, roles = shop
    body = {"member_code": member.code, "product_id": product_id, "idempotency_key": key}
    return await client.post("/api/staff/service-cards", json=body, headers=roles["cashier"])


async def use(client: TestClient, shop: Any, card_id: int, key: str) -> Any:
    return await client.post(
        f"/api/staff/service-cards/{card_id}/use", json={"idempotency_key": key}, headers=shop[2]["cashier"]
    )


async def test_products_are_validated_and_admin_only(client: TestClient, shop: Any) -> None:
    _, _, roles = shop
    assert (
        await client.post("/api/admin/service-cards/products", json=COUNT, headers=roles["manager"])
    ).status == 403
    for bad, field in (
        ({**COUNT, "uses": None}, "uses"),
        ({**TIME, "uses": 5}, "uses"),
        ({**COUNT, "valid_days": 0}, "valid_days"),
    ):
        response = await client.post("/api/admin/service-cards/products", json=bad, headers=roles["admin"])
        assert response.status == 400 and (await response.json())["error"]["field"] == field
    count_id = await product(client, roles["admin"], COUNT)
    await product(client, roles["admin"], TIME)
    listed = await client.get("/api/admin/service-cards/products", headers=roles["manager"])
    assert [p["kind"] for p in (await listed.json())["products"]] == ["count", "time"]
    kind_change = await client.put(
        f"/api/admin/service-cards/products/{count_id}", json=TIME, headers=roles["admin"]
    )
    assert kind_change.status == 400 and (await kind_change.json())["error"]["field"] == "kind"
    renamed = await client.put(
        f"/api/admin/service-cards/products/{count_id}",
        json={**COUNT, "name": "洗剪吹3次卡"},
        headers=roles["admin"],
    )
    assert (await renamed.json())["name"] == "洗剪吹3次卡"
    gone = await client.delete(f"/api/admin/service-cards/products/{count_id}", headers=roles["admin"])
    assert gone.status == 204
    huge = await client.delete("/api/admin/service-cards/products/3000000000", headers=roles["admin"])
    assert huge.status == 404  # beyond the id column: not found, never a database error
    assert (await sell(client, shop, 3_000_000_000)).status == 400
    refused = await sell(client, shop, count_id)
    assert refused.status == 400 and "下架" in (await refused.json())["error"]["message"]


async def test_sell_records_price_and_validity_and_replays(client: TestClient, shop: Any) -> None:
    merchant, member, roles = shop
    count_id = await product(client, roles["admin"], COUNT)
    first = await sell(client, shop, count_id)
    assert first.status == 200, await first.text()
    card = await first.json()
    today = datetime.now(ZoneInfo(merchant.timezone)).date()
    assert (card["uses_left"], card["price_fen"], card["source"], card["status"]) == (
        3,
        30_000,
        "sold",
        "active",
    )
    assert date.fromisoformat(card["valid_until_date"]) == today + timedelta(days=30)
    again = await sell(client, shop, count_id)
    assert (await again.json())["id"] == card["id"] and (await again.json())["replayed"] is True
    time_id = await product(client, roles["admin"], TIME)
    clash = await sell(client, shop, time_id)
    assert clash.status == 409 and (await clash.json())["error"]["code"] == "idempotency_mismatch"
    assert await MemberCard.filter(member_id=member.id).count() == 1


async def test_grant_is_free_audited_and_manager_only(client: TestClient, shop: Any) -> None:
    _, member, roles = shop
    time_id = await product(client, roles["admin"], TIME)
    body = {
        "member_code": member.code,
        "product_id": time_id,
        "reason": "会员日赠送",
        "idempotency_key": "g1",
    }
    assert (
        await client.post("/api/admin/service-cards/grant", json=body, headers=roles["cashier"])
    ).status == 403
    granted = await client.post("/api/admin/service-cards/grant", json=body, headers=roles["manager"])
    assert granted.status == 200, await granted.text()
    card = await granted.json()
    assert (card["source"], card["price_fen"], card["uses_left"]) == ("granted", 0, None)
    assert await AuditLog.filter(action="service_card.granted").count() == 1


async def test_uses_count_down_replay_and_stop_when_used_up(client: TestClient, shop: Any) -> None:
    count_id = await product(client, shop[2]["admin"], COUNT)
    card_id = (await (await sell(client, shop, count_id)).json())["id"]
    lefts = [
        (await (await use(client, shop, card_id, f"u{i}")).json())["card"]["uses_left"] for i in range(3)
    ]
    assert lefts == [2, 1, 0]
    replay = await (await use(client, shop, card_id, "u1")).json()
    assert replay["replayed"] is True and replay["use"]["uses_left_after"] == 1
    exhausted = await use(client, shop, card_id, "u4")
    error = (await exhausted.json())["error"]
    assert exhausted.status == 409 and (error["code"], error["message"]) == (
        "service_card_exhausted",
        "服务卡次数已用完",
    )
    assert await CardUse.filter(card_id=card_id).count() == 3


async def test_expired_not_started_and_revoked_cards_are_refused(client: TestClient, shop: Any) -> None:
    merchant, _, roles = shop
    time_id = await product(client, roles["admin"], TIME)
    card_id = (await (await sell(client, shop, time_id)).json())["id"]
    for i in range(3):
        assert (await use(client, shop, card_id, f"t{i}")).status == 200  # a time card has no count
    ended = service_cards.valid_until(datetime.now(UTC) - timedelta(days=40), 30, merchant.timezone)
    await MemberCard.filter(id=card_id).update(valid_until=ended, valid_from=ended - timedelta(days=30))
    expired = await use(client, shop, card_id, "x1")
    assert expired.status == 409
    assert (await expired.json())["error"] == {
        "code": "service_card_expired",
        "field": "card",
        "message": f"服务卡已过期 {ended.date().isoformat()}",
    }
    future = datetime.now(UTC) + timedelta(days=2)
    await MemberCard.filter(id=card_id).update(valid_from=future, valid_until=future + timedelta(days=30))
    early = await (await use(client, shop, card_id, "x2")).json()
    assert early["error"]["code"] == "service_card_not_started"
    await MemberCard.filter(id=card_id).update(valid_from=datetime.now(UTC) - timedelta(days=1))
    revoked = await client.post(
        f"/api/admin/service-cards/{card_id}/revoke", json={"reason": "误售"}, headers=roles["manager"]
    )
    assert (await revoked.json())["status"] == "revoked"
    refused = await use(client, shop, card_id, "x3")
    assert refused.status == 409 and (await refused.json())["error"]["code"] == "service_card_revoked"
    assert await CardUse.filter(card_id=card_id).count() == 3


async def test_expiry_message_names_the_last_valid_day(client: TestClient, shop: Any) -> None:
    merchant = shop[0]
    bought = datetime(2026, 11, 1, 4, tzinfo=UTC)
    card = MemberCard(
        kind="time", valid_from=bought, valid_until=service_cards.valid_until(bought, 30, "Asia/Shanghai")
    )
    refusal = service_cards.refusal(card, datetime(2026, 12, 2, tzinfo=UTC), merchant.timezone)
    assert refusal is not None and refusal.message == "服务卡已过期 2026-12-01"
    assert refusal.code == ErrorCode.SERVICE_CARD_EXPIRED
    assert service_cards.refusal(card, datetime(2026, 12, 1, 15, 59, tzinfo=UTC), merchant.timezone) is None


async def test_use_by_scan_finds_the_members_card(client: TestClient, shop: Any) -> None:
    merchant, member, roles = shop
    count_id = await product(client, roles["admin"], COUNT)
    time_id = await product(client, roles["admin"], TIME)
    none = await client.post(
        "/api/staff/service-cards/use",
        headers=roles["cashier"],
        json={"member_code": member.code, "product_id": count_id, "idempotency_key": "n"},
    )
    assert none.status == 404
    await sell(client, shop, count_id)
    token = cardtoken.issue(SECRET.encode(), merchant.id, member.id, int(time.time()))
    used = await client.post(
        "/api/staff/service-cards/use",
        headers=roles["cashier"],
        json={"qr": token, "product_id": count_id, "idempotency_key": "q1"},
    )
    assert used.status == 200, await used.text()
    assert (await used.json())["card"]["uses_left"] == 2
    wrong = await client.post(
        "/api/staff/service-cards/use",
        headers=roles["cashier"],
        json={"member_code": member.code, "product_id": time_id, "idempotency_key": "q1"},
    )
    assert wrong.status == 409 and (await wrong.json())["error"]["code"] == "idempotency_mismatch"
    malformed = await client.post(
        "/api/staff/service-cards/use",
        headers=roles["cashier"],
        json={"qr": "1.2.3", "product_id": count_id, "idempotency_key": "q2"},
    )
    error = (await malformed.json())["error"]
    assert (malformed.status, error["code"], error["field"]) == (400, "card_invalid", "qr")


async def test_concurrent_uses_of_three_left_serve_exactly_three(client: TestClient, shop: Any) -> None:
    merchant, _, roles = shop
    count_id = await product(client, roles["admin"], COUNT)
    card_id = (await (await sell(client, shop, count_id)).json())["id"]

    async def one(i: int) -> bool:
        try:
            await service_cards.use(merchant, card_id, key=f"c{i}", staff=None, now=datetime.now(UTC))
        except DomainError as exc:
            assert exc.code == ErrorCode.SERVICE_CARD_EXHAUSTED
            return False
        return True

    results = await asyncio.gather(*(one(i) for i in range(10)))
    assert sum(results) == 3
    assert (await MemberCard.get(id=card_id)).uses_left == 0
    assert await CardUse.filter(card_id=card_id).count() == 3
    over_http = await asyncio.gather(*(use(client, shop, card_id, f"h{i}") for i in range(5)))
    assert {r.status for r in over_http} == {409}


async def test_member_sees_their_cards(client: TestClient, shop: Any) -> None:
    merchant, member, roles = shop
    count_id = await product(client, roles["admin"], COUNT)
    card_id = (await (await sell(client, shop, count_id)).json())["id"]
    await use(client, shop, card_id, "u1")
    other = await make_member(merchant, openid="o-other")
    await client.post(
        "/api/staff/service-cards",
        headers=roles["cashier"],
        json={"member_id": other.id, "product_id": count_id, "idempotency_key": "s2"},
    )
    issued = await SessionStore(client.app[REDIS]).issue(SessionKind.MEMBER, merchant.id, member.id)
    mine = await client.get(
        f"/api/mp/{merchant.slug}/service-cards", headers={"Authorization": f"Bearer {issued.token}"}
    )
    assert mine.status == 200, await mine.text()
    cards = (await mine.json())["cards"]
    assert [(c["id"], c["uses_left"], len(c["last_uses"]), c["name"]) for c in cards] == [
        (card_id, 2, 1, "洗剪吹10次卡")
    ]


async def test_revoke_with_a_member_refuses_another_members_card(client: TestClient, shop: Any) -> None:
    merchant, member, roles = shop
    other = await make_member(merchant, "o-other")
    card_id = (await (await sell(client, shop, await product(client, roles["admin"], TIME))).json())["id"]
    path = f"/api/admin/service-cards/{card_id}/revoke"
    wrong = await client.post(path, json={"reason": "误售", "member_id": other.id}, headers=roles["manager"])
    assert wrong.status == 404 and (await wrong.json())["error"]["code"] == "not_found"
    assert (await MemberCard.get(id=card_id)).revoked_at is None
    right = await client.post(path, json={"reason": "误售", "member_id": member.id}, headers=roles["manager"])
    assert right.status == 200 and (await right.json())["status"] == "revoked"
