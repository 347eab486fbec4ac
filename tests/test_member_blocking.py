"""Blocking a member: every way to earn, spend or redeem is refused with the reason, at the till, in the
mini-program and in chat, changing nothing; unblocking restores each of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.core.chat import IncomingMessage, TextReply
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger, referrals
from handlers.loyalty.bonuses import profile_bonus
from handlers.loyalty.ledger_audit import audit_points
from handlers.members.blocking import BLOCKED_MESSAGE
from handlers.wallet.audit import audit_wallet
from models.checkin import Checkin
from models.coupon import Coupon, CouponStatus
from models.loyalty import AuditLog
from models.mall import MallOrder, OrderStatus
from models.member import Member
from models.merchant import Merchant
from models.points import PointsAccount, PointsKind, PointsTransaction
from models.purchase import Purchase
from models.wallet import WalletAccount
from tests.support.factories import EFFECTS, make_member, make_merchant, staff_headers
from tests.test_coupon_api import give as give_coupon
from tests.test_coupon_api import member_headers, new_template
from tests.test_flash import buy, left_in_redis, make_item, new_sale

REASON = "疑似刷单"


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await make_merchant()


@pytest.fixture
async def member(shop: Merchant) -> Member:
    member = await make_member(shop)
    await ledger.credit(
        shop.id, member.id, 5_000, PointsKind.GRANT, key="seed", now=datetime.now(UTC), expires_at=None
    )
    return member


async def refused(response: Any) -> None:
    assert response.status == 409, await response.text()
    assert (await response.json())["error"] == {
        "code": "member_blocked",
        "message": BLOCKED_MESSAGE,
        "field": "member",
    }


async def balances(member: Member) -> tuple[int, int]:
    points = await PointsAccount.get(member_id=member.id)
    wallet = await WalletAccount.get_or_none(member_id=member.id)
    return points.balance, (wallet.principal_fen + wallet.bonus_fen) if wallet else 0


def purchase(member: Member, key: str, **extra: Any) -> dict[str, Any]:
    return {"idempotency_key": key, "member_id": member.id, "amount_fen": 20_000, **extra}


async def chat(client: TestClient, shop: Merchant, content: str) -> str:
    from webhooks.appkeys import DISPATCHER

    message = IncomingMessage(openid="o-member-1", kind="text", created_at=datetime.now(UTC), content=content)
    reply = await client.app[DISPATCHER].dispatch(shop, message)
    assert isinstance(reply, TextReply)
    return reply.text


async def test_a_blocked_member_is_refused_everywhere_and_unblocking_restores_it(
    client: TestClient, shop: Merchant, member: Member
) -> None:
    manager = await staff_headers(client, shop, "manager")
    admin = await staff_headers(client, shop, "admin")
    cashier = await staff_headers(client, shop, "cashier")
    mp = await member_headers(client, shop, member)
    top_up = {"member_id": member.id, "amount_fen": 10_000, "payment_method": "cash", "idempotency_key": "t1"}
    assert (await client.post("/api/staff/wallet/top-ups", json=top_up, headers=cashier)).status == 200
    template = await new_template(client, admin)
    assert (await give_coupon(client, manager, member, template["id"], "c1")).status == 200
    coupon = await Coupon.get(member_id=member.id)
    item = await make_item(shop, stock=10)
    redeemed = await client.post(
        "/api/mp/shop/mall/redeem", json={"item_id": item.id, "idempotency_key": "before"}, headers=mp
    )
    assert redeemed.status == 200, await redeemed.text()
    pickup_code = (await redeemed.json())["pickup_code"]
    sale = await new_sale(client, shop, item, stock=3)
    before = await balances(member)

    blocked = await client.post(
        f"/api/admin/members/{member.id}/block", json={"reason": f"  {REASON} "}, headers=manager
    )
    assert blocked.status == 200, await blocked.text()
    body = await blocked.json()
    assert (body["blocked"], body["blocked_reason"]) == (True, REASON)

    scan = await client.post("/api/staff/scan", json={"member_code": member.code}, headers=cashier)
    assert (await scan.json())["blocked"] is True and (await scan.json())["blocked_reason"] == REASON
    # The till: a plain purchase, a points offset, a coupon, a stored-value payment.
    await refused(await client.post("/api/staff/purchases", json=purchase(member, "p1"), headers=cashier))
    offset = purchase(member, "p2", points_offset=1_000)
    await refused(await client.post("/api/staff/purchases", json=offset, headers=cashier))
    with_coupon = purchase(member, "p3", coupon_code=coupon.code)
    await refused(await client.post("/api/staff/purchases", json=with_coupon, headers=cashier))
    check = {"member_id": member.id, "code": coupon.code, "order_fen": 20_000}
    await refused(await client.post("/api/staff/coupons/check", json=check, headers=cashier))
    stored = purchase(member, "p4", stored_value_fen=5_000)
    await refused(await client.post("/api/staff/purchases", json=stored, headers=cashier))
    await refused(
        await client.post(
            "/api/staff/wallet/top-ups", json={**top_up, "idempotency_key": "t2"}, headers=cashier
        )
    )
    # The mall: redeem, pick-up of an order placed before the block, a flash sale.
    again = {"item_id": item.id, "idempotency_key": "after"}
    await refused(await client.post("/api/mp/shop/mall/redeem", json=again, headers=mp))
    verify = await client.post("/api/staff/pickups/verify", json={"code": pickup_code}, headers=cashier)
    await refused(verify)
    await refused(await buy(client, shop, member, sale["id"], "f1"))
    assert await left_in_redis(client, sale["id"]) == 3  # the unit the gate reserved went back
    # Check-in: the mini-program, a make-up, and the chat's polite reply.
    await refused(await client.post("/api/mp/shop/checkin", headers=mp))
    yesterday = (datetime.now(UTC) + timedelta(hours=8) - timedelta(days=1)).date().isoformat()
    await refused(await client.post("/api/mp/shop/checkin/makeup", json={"day": yesterday}, headers=mp))
    assert await chat(client, shop, "签到") == (
        "抱歉，您的会员账户已暂停使用，暂时不能签到、积分或兑换。\n如有疑问，请联系shop 门店。"
    )

    assert await balances(member) == before
    assert await Purchase.filter(member_id=member.id).count() == 0
    assert await Checkin.filter(member_id=member.id).count() == 0
    assert await MallOrder.filter(member_id=member.id).count() == 1
    assert (await MallOrder.get(member_id=member.id)).status == OrderStatus.AWAITING_PICKUP
    assert (await Coupon.get(id=coupon.id)).status == CouponStatus.ISSUED

    unblocked = await client.post(f"/api/admin/members/{member.id}/unblock", headers=manager)
    assert (await unblocked.json())["blocked"] is False and (await unblocked.json())["blocked_reason"] == ""
    paid = await client.post(
        "/api/staff/purchases",
        json=purchase(member, "p5", points_offset=1_000, coupon_code=coupon.code, stored_value_fen=1_000),
        headers=cashier,
    )
    assert paid.status == 200, await paid.text()
    assert (
        await client.post("/api/staff/pickups/verify", json={"code": pickup_code}, headers=cashier)
    ).status == 200
    assert (await buy(client, shop, member, sale["id"], "f2")).status == 200
    assert await left_in_redis(client, sale["id"]) == 2
    assert (await client.post("/api/mp/shop/checkin", headers=mp)).status == 200
    assert (await client.post("/api/mp/shop/mall/redeem", json=again, headers=mp)).status == 200
    assert await audit_points(shop.id) == [] and await audit_wallet(shop.id) == []
    actions = (
        await AuditLog.filter(subject=f"member:{member.id}").order_by("id").values_list("action", "detail")
    )
    assert [(action, detail.get("reason")) for action, detail in actions] == [
        ("member.block", REASON),
        ("member.unblock", REASON),
    ]


async def test_chat_check_in_works_again_after_unblocking(
    client: TestClient, shop: Merchant, member: Member
) -> None:
    manager = await staff_headers(client, shop, "manager")
    await client.post(f"/api/admin/members/{member.id}/block", json={"reason": REASON}, headers=manager)
    assert "暂停使用" in await chat(client, shop, "签到")
    await client.post(f"/api/admin/members/{member.id}/unblock", headers=manager)
    assert (await chat(client, shop, "签到")).startswith("签到成功")


async def test_blocking_is_idempotent_and_needs_a_manager_and_a_reason(
    client: TestClient, shop: Merchant, member: Member
) -> None:
    manager = await staff_headers(client, shop, "manager")
    cashier = await staff_headers(client, shop, "cashier")
    url = f"/api/admin/members/{member.id}/block"
    assert (await client.post(url, json={"reason": REASON}, headers=cashier)).status == 403
    empty = await client.post(url, json={"reason": "   "}, headers=manager)
    assert empty.status == 400 and (await empty.json())["error"]["field"] == "reason"
    assert (await client.post(url, json={"reason": REASON}, headers=manager)).status == 200
    assert (await client.post(url, json={"reason": "另一个原因"}, headers=manager)).status == 200
    stored = await Member.get(id=member.id)
    assert stored.blocked_reason == REASON  # blocking a blocked member changes nothing
    assert await AuditLog.filter(action="member.block").count() == 1
    assert (
        await client.post("/api/admin/members/999/block", json={"reason": REASON}, headers=manager)
    ).status == 404


async def test_a_blocked_member_gets_no_bonus_or_referral_award(shop: Merchant) -> None:
    now = datetime.now(UTC)
    referral = {"trigger": "first_purchase", "level_points": [100]}
    await loyalty_config.save_program(shop.id, {"profile_bonus": 50, "referral": referral}, actor="test")
    blocked = await make_member(shop, openid="o-blocked", blocked_at=now, blocked_reason=REASON)
    active = await make_member(shop, openid="o-active")
    for who in (blocked, active):
        await profile_bonus(who, now=now)
        referee = await make_member(shop, openid=f"o-referee-{who.id}", referrer=who)
        await referrals.award(shop, referee.id, trigger="first_purchase", now=now, effects=EFFECTS)
    earned = await PointsTransaction.filter(kind__in=(PointsKind.EARN_PROFILE, PointsKind.EARN_REFERRAL))
    assert sorted((t.member_id, t.kind, t.delta) for t in earned) == [
        (active.id, PointsKind.EARN_PROFILE, 50),
        (active.id, PointsKind.EARN_REFERRAL, 100),
    ]
