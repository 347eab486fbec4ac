"""Stored value over HTTP: till top-up, admin adjust/withdraw with roles, member and admin views."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.loyalty import config as loyalty_config
from handlers.staff.sessions import SessionKind, SessionStore
from handlers.wallet.audit import audit_wallet
from models.loyalty import AuditLog
from models.member import Member
from models.merchant import Merchant
from models.wallet import WalletTransaction
from tests.support.factories import EFFECTS, make_member, make_merchant, staff_headers
from webhooks.appkeys import REDIS

BONUS = {"stored_value": {"bonus_tiers": [{"min_fen": 10_000, "bonus_fen": 2_000}]}}


@pytest.fixture
async def shop(client: TestClient) -> tuple[Merchant, Member]:
    merchant = await make_merchant()
    await loyalty_config.save_program(merchant.id, BONUS, actor="test")
    return merchant, await make_member(merchant)


async def member_headers(client: TestClient, shop: Merchant, member: Member) -> dict[str, str]:
    issued = await SessionStore(client.app[REDIS]).issue(SessionKind.MEMBER, shop.id, member.id)
    return {"Authorization": f"Bearer {issued.token}"}


def top_up_body(member: Member, key: str = "k1", amount: int = 10_000, **extra: Any) -> dict[str, Any]:
    return {
        "member_code": member.code,
        "amount_fen": amount,
        "payment_method": "wechat",
        "idempotency_key": key,
        **extra,
    }


async def test_cashier_tops_up_with_bonus_and_a_retry_replays(client: TestClient, shop: Any) -> None:
    merchant, member = shop
    cashier = await staff_headers(client, merchant)
    first = await client.post("/api/staff/wallet/top-ups", json=top_up_body(member), headers=cashier)
    assert first.status == 200, await first.text()
    body = await first.json()
    assert (body["principal_after"], body["bonus_after"], body["total_after"], body["replayed"]) == (
        10_000,
        2_000,
        12_000,
        False,
    )
    again = await client.post("/api/staff/wallet/top-ups", json=top_up_body(member), headers=cashier)
    assert (await again.json())["replayed"] is True
    other = await client.post(
        "/api/staff/wallet/top-ups", json=top_up_body(member, amount=20_000), headers=cashier
    )
    assert other.status == 409 and (await other.json())["error"]["code"] == "idempotency_mismatch"
    by_id = {"member_id": member.id, "amount_fen": 500, "payment_method": "cash", "idempotency_key": "k2"}
    assert (await client.post("/api/staff/wallet/top-ups", json=by_id, headers=cashier)).status == 200
    assert await WalletTransaction.all().count() == 2
    assert await audit_wallet() == []


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"amount_fen": 0}, 400, "amount_fen"),
        ({"amount_fen": "100"}, 400, "amount_fen"),
        ({"payment_method": "bitcoin"}, 400, "payment_method"),
        ({"idempotency_key": ""}, 400, "idempotency_key"),
        ({"member_id": 1}, 400, None),
        ({"member_code": "ZZZZZZZZ"}, 404, "member_code"),
    ],
)
async def test_bad_top_ups_are_refused_and_change_nothing(
    client: TestClient, shop: Any, change: dict[str, Any], status: int, field: str | None
) -> None:
    merchant, member = shop
    cashier = await staff_headers(client, merchant)
    response = await client.post(
        "/api/staff/wallet/top-ups", json=top_up_body(member, **change), headers=cashier
    )
    assert response.status == status, await response.text()
    if field:
        assert (await response.json())["error"]["field"] == field
    assert await WalletTransaction.all().count() == 0


async def test_top_up_needs_staff(client: TestClient, shop: Any) -> None:
    merchant, member = shop
    response = await client.post(
        "/api/staff/wallet/top-ups",
        json=top_up_body(member),
        headers=await member_headers(client, merchant, member),
    )
    assert response.status == 401


async def test_adjust_is_admin_only_never_negative_and_audited(client: TestClient, shop: Any) -> None:
    merchant, member = shop
    manager = await staff_headers(client, merchant, "manager")
    admin = await staff_headers(client, merchant, "admin")
    body = {"member_code": member.code, "bonus_delta": 1_000, "reason": "活动补偿", "idempotency_key": "a1"}
    assert (await client.post("/api/admin/wallet/adjust", json=body, headers=manager)).status == 403
    done = await client.post("/api/admin/wallet/adjust", json=body, headers=admin)
    assert done.status == 200, await done.text()
    assert (await done.json())["bonus_after"] == 1_000
    below = {**body, "bonus_delta": -1_001, "idempotency_key": "a2"}
    refused = await client.post("/api/admin/wallet/adjust", json=below, headers=admin)
    assert refused.status == 409 and (await refused.json())["error"]["code"] == "insufficient_balance"
    zero = {**body, "bonus_delta": 0, "idempotency_key": "a3"}
    assert (await client.post("/api/admin/wallet/adjust", json=zero, headers=admin)).status == 400
    assert await AuditLog.filter(action="wallet.adjust").count() == 1


async def test_withdraw_returns_principal_only_for_a_manager(client: TestClient, shop: Any) -> None:
    merchant, member = shop
    cashier = await staff_headers(client, merchant)
    manager = await staff_headers(client, merchant, "manager")
    await client.post("/api/staff/wallet/top-ups", json=top_up_body(member), headers=cashier)
    body = {"member_code": member.code, "reason": "会员退卡", "idempotency_key": "w1"}
    assert (await client.post("/api/admin/wallet/withdraw", json=body, headers=cashier)).status == 403
    done = await client.post("/api/admin/wallet/withdraw", json=body, headers=manager)
    assert done.status == 200, await done.text()
    result = await done.json()
    assert (result["principal_delta"], result["bonus_delta"], result["bonus_after"]) == (-10_000, 0, 2_000)
    more = await client.post(
        "/api/admin/wallet/withdraw", json={**body, "idempotency_key": "w2"}, headers=manager
    )
    assert more.status == 409 and "赠送金额不可退现" in (await more.json())["error"]["message"]
    assert await AuditLog.filter(action="wallet.withdraw").count() == 1
    assert await audit_wallet() == []


async def test_member_and_admin_see_the_wallet(client: TestClient, shop: Any) -> None:
    merchant, member = shop
    cashier = await staff_headers(client, merchant)
    manager = await staff_headers(client, merchant, "manager")
    await client.post("/api/staff/wallet/top-ups", json=top_up_body(member), headers=cashier)
    await client.post("/api/staff/wallet/top-ups", json=top_up_body(member, "k2", 3_000), headers=cashier)
    mine = await client.get(
        f"/api/mp/{merchant.slug}/wallet?limit=1", headers=await member_headers(client, merchant, member)
    )
    assert mine.status == 200, await mine.text()
    body = await mine.json()
    assert (body["principal_fen"], body["bonus_fen"], body["total_fen"]) == (13_000, 2_000, 15_000)
    assert [(t["kind"], t["kind_label"], t["principal_delta"]) for t in body["transactions"]] == [
        ("top_up", "充值", 3_000)
    ]
    bad = await client.get(
        f"/api/mp/{merchant.slug}/wallet?limit=0", headers=await member_headers(client, merchant, member)
    )
    assert bad.status == 400
    admin_view = await client.get(f"/api/admin/members/{member.code}/wallet", headers=manager)
    assert admin_view.status == 200 and len((await admin_view.json())["transactions"]) == 2
    assert (await client.get(f"/api/admin/members/{member.code}/wallet", headers=cashier)).status == 403
    outsider = await make_merchant("other")
    stranger = await client.get(
        f"/api/admin/members/{member.code}/wallet",
        headers=await staff_headers(client, outsider, "manager", "other-manager"),
    )
    assert stranger.status == 404


async def test_chat_balance_shows_stored_value_and_usable_cards(client: TestClient, shop: Any) -> None:
    from datetime import UTC, datetime

    from bot.dialog.intents import build_router
    from handlers.core.chat import IncomingMessage, TextReply
    from handlers.wallet import ledger as wallet
    from handlers.wallet import service_cards
    from handlers.wallet.service_cards import ProductInput
    from models.cards import CardKind
    from webhooks.appkeys import DISPATCHER

    merchant, member = shop
    assert member.openid is not None
    router = build_router()
    for word in ("余额", "balance", "储值"):
        assert (intent := router.by_keyword(word)) is not None and intent.name == "balance"
    assert (intent := router.by_menu_key("MENU_BALANCE")) is not None and intent.name == "balance"

    async def say(content: str = "余额") -> str:
        message = IncomingMessage(
            openid=member.openid or "", kind="text", created_at=datetime.now(UTC), content=content
        )
        reply = await client.app[DISPATCHER].dispatch(merchant, message)
        assert isinstance(reply, TextReply)
        return reply.text

    assert "您的储值余额：0.00 元" in await say()
    now = datetime.now(UTC)
    await wallet.top_up(
        merchant, member.id, 10_000, key="t1", payment_method="cash", now=now, effects=EFFECTS
    )
    product = await service_cards.create_product(
        merchant, ProductInput(CardKind.COUNT, "洗剪吹5次卡", "洗剪吹", 5, 30, 10_000), actor="test"
    )
    issued = await service_cards.issue(
        merchant, member, product.id, source="sold", key="s1", now=now, actor="t"
    )
    await service_cards.use(merchant, issued.card.id, key="u1", staff=None, now=now)
    text = await say()
    until = service_cards.local_date(issued.card.valid_until, merchant.timezone)
    assert "您的储值余额：120.00 元" in text and "本金 100.00 元，赠送 20.00 元" in text
    assert f"洗剪吹5次卡：剩余 4 次，有效期至 {until}" in text
    assert "【余额】" in await say("帮助")
