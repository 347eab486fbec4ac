"""Coupon endpoints over HTTP (member, cashier, manager, admin) and the 优惠券 chat keyword."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.dialog.intents import build_router
from handlers.core.chat import IncomingMessage, TextReply
from handlers.coupons import redeem as coupons
from handlers.staff.sessions import SessionKind, SessionStore
from models.coupon import Coupon, CouponStatus
from models.loyalty import AuditLog
from models.member import Member
from models.merchant import Merchant
from tests.support.factories import make_member, make_merchant, staff_headers
from webhooks.appkeys import DISPATCHER, REDIS

TEMPLATES = "/api/admin/coupons/templates"
FULL_100 = {
    "name": "满100减20",
    "kind": "fixed",
    "threshold_fen": 10_000,
    "amount_off_fen": 2_000,
    "valid_days": 30,
}


@pytest.fixture
async def shop(client: Any) -> Merchant:
    return await make_merchant()


@pytest.fixture
async def member(shop: Merchant) -> Member:
    return await make_member(shop)


@pytest.fixture
async def admin(client: Any, shop: Merchant) -> dict[str, str]:
    return await staff_headers(client, shop, "admin")


async def member_headers(client: Any, shop: Merchant, member: Member) -> dict[str, str]:
    issued = await SessionStore(client.app[REDIS]).issue(SessionKind.MEMBER, shop.id, member.id)
    return {"Authorization": f"Bearer {issued.token}"}


async def new_template(client: Any, admin: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = await client.post(TEMPLATES, json={**FULL_100, **overrides}, headers=admin)
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def give(client: Any, headers: dict[str, str], member: Member, template_id: int, key: str) -> Any:
    return await client.post(
        "/api/admin/coupons/issue",
        headers=headers,
        json={
            "member_code": member.code,
            "template_id": template_id,
            "idempotency_key": key,
            "reason": "客诉补偿",
        },
    )


# Templates ----------------------------------------------------------------------------------------


async def test_admin_creates_reads_replaces_and_deletes_templates(
    client: Any, shop: Merchant, admin: dict[str, str]
) -> None:
    created = await new_template(client, admin, store_codes=["main"], total_stock=100, limit_per_member=1)
    assert created["description"] == "满100减20" and created["issued"] == 0
    assert created["store_codes"] == ["main"]
    path = f"{TEMPLATES}/{created['id']}"
    assert (await (await client.get(path, headers=admin)).json())["name"] == "满100减20"
    changed = await client.put(
        path, headers=admin, json={**FULL_100, "name": "新客券", "amount_off_fen": 3_000}
    )
    assert changed.status == 200 and (await changed.json())["description"] == "满100减30"
    listed = await (await client.get(TEMPLATES, headers=admin)).json()
    assert [t["id"] for t in listed["items"]] == [created["id"]]
    assert (await client.delete(path, headers=admin)).status == 204
    assert (await client.get(path, headers=admin)).status == 404
    actions = await AuditLog.filter(merchant_id=shop.id).order_by("id").values_list("action", flat=True)
    assert actions == ["coupon_template.create", "coupon_template.replace", "coupon_template.delete"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**FULL_100, "amount_off_fen": 20_000}, "amount_off_fen"),
        ({**FULL_100, "valid_days": None}, "valid_days"),
        (
            {
                **FULL_100,
                "valid_from": "2024-05-01T00:00:00+08:00",
                "valid_until": "2024-06-01T00:00:00+08:00",
            },
            "valid_days",
        ),
        ({**FULL_100, "valid_days": None, "valid_from": "2024-05-01T00:00:00+08:00"}, "valid_until"),
        ({**FULL_100, "kind": "percent", "amount_off_fen": 0, "percent_off": 100}, "percent_off"),
        ({**FULL_100, "kind": "percent", "amount_off_fen": 0, "percent_off": 0}, "percent_off"),
        ({**FULL_100, "kind": "gift", "amount_off_fen": 0}, "gift_name"),
        ({**FULL_100, "store_codes": ["nowhere"]}, "store_codes"),
        ({**FULL_100, "total_stock": 0}, "total_stock"),
        ({**FULL_100, "kind": "cash"}, "kind"),
        ({**FULL_100, "name": " "}, "name"),
    ],
)
async def test_template_validation_names_the_field(
    client: Any, admin: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = await client.post(TEMPLATES, json=body, headers=admin)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["field"] == field


async def test_issued_templates_keep_their_terms_and_cannot_be_deleted(
    client: Any, shop: Merchant, member: Member, admin: dict[str, str]
) -> None:
    created = await new_template(client, admin, total_stock=5)
    assert (await give(client, admin, member, created["id"], "k1")).status == 200
    path = f"{TEMPLATES}/{created['id']}"
    frozen = await client.put(path, headers=admin, json={**FULL_100, "amount_off_fen": 5_000})
    assert frozen.status == 409 and (await frozen.json())["error"]["field"] == "amount_off_fen"
    renamed = await client.put(path, headers=admin, json={**FULL_100, "name": "改名", "active": False})
    assert renamed.status == 200 and (await renamed.json())["active"] is False
    assert (await client.delete(path, headers=admin)).status == 409


async def test_roles(client: Any, shop: Merchant, member: Member) -> None:
    cashier = await staff_headers(client, shop, "cashier")
    manager = await staff_headers(client, shop, "manager")
    assert (await client.post(TEMPLATES, json=FULL_100, headers=manager)).status == 403
    assert (await client.get(TEMPLATES, headers=cashier)).status == 403
    assert (await client.get(TEMPLATES, headers=manager)).status == 200
    assert (await client.get("/api/admin/coupons", headers=cashier)).status == 403
    assert (await client.get(TEMPLATES)).status == 401
    mine = await member_headers(client, shop, member)
    assert (await client.get(f"/api/mp/{shop.slug}/coupons", headers=cashier)).status == 401
    assert (
        await client.post(
            "/api/staff/coupons/check",
            headers=mine,
            json={"member_id": member.id, "code": "X", "order_fen": 1},
        )
    ).status == 401


# Issue, revoke, list -------------------------------------------------------------------------------


async def test_manager_issues_by_hand_once_per_key_with_an_audit_row(
    client: Any, shop: Merchant, member: Member, admin: dict[str, str]
) -> None:
    created = await new_template(client, admin, limit_per_member=1)
    manager = await staff_headers(client, shop, "manager")
    first = await give(client, manager, member, created["id"], "comp-1")
    assert first.status == 200, await first.text()
    body = await first.json()
    assert body["replayed"] is False and body["member_code"] == member.code
    assert body["coupon"]["state"] == "usable" and body["coupon"]["source"] == "manual"
    again = await (await give(client, manager, member, created["id"], "comp-1")).json()
    assert again["replayed"] is True and again["coupon"]["id"] == body["coupon"]["id"]
    over = await give(client, manager, member, created["id"], "comp-2")
    assert over.status == 409 and (await over.json())["error"]["code"] == "coupon_limit_reached"
    missing = await give(client, manager, member, 999_999, "comp-3")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "coupon_template_not_found"
    assert await AuditLog.filter(merchant_id=shop.id, action="coupon.issue").count() == 1


async def test_revoke_and_admin_listing(
    client: Any, shop: Merchant, member: Member, admin: dict[str, str]
) -> None:
    created = await new_template(client, admin)
    ids = [
        (await (await give(client, admin, member, created["id"], f"k{i}")).json())["coupon"]["id"]
        for i in range(3)
    ]
    revoked = await client.post(f"/api/admin/coupons/{ids[0]}/revoke", headers=admin, json={"reason": "误发"})
    assert revoked.status == 200 and (await revoked.json())["state"] == "revoked"
    assert (
        await client.post(f"/api/admin/coupons/{ids[0]}/revoke", headers=admin, json={"reason": "误发"})
    ).status == 200
    assert (
        await client.post("/api/admin/coupons/999999/revoke", headers=admin, json={"reason": "误发"})
    ).status == 404
    assert await AuditLog.filter(action="coupon.revoke").count() == 1
    page = await (
        await client.get(
            f"/api/admin/coupons?template_id={created['id']}&status=issued&limit=1", headers=admin
        )
    ).json()
    assert [c["id"] for c in page["items"]] == [ids[2]] and page["next_cursor"] == ids[2]
    rest = await (await client.get(f"/api/admin/coupons?status=issued&cursor={ids[2]}", headers=admin)).json()
    assert [c["id"] for c in rest["items"]] == [ids[1]] and rest["next_cursor"] is None
    bad = await client.get("/api/admin/coupons?status=lost", headers=admin)
    assert bad.status == 400


# Member and cashier ---------------------------------------------------------------------------------


async def test_member_sees_usable_coupons_first(
    client: Any, shop: Merchant, member: Member, admin: dict[str, str]
) -> None:
    created = await new_template(client, admin)
    now = datetime.now(UTC)
    old = await coupons.issue(
        shop, member.id, created["id"], source="mall", key="old", now=now - timedelta(days=40)
    )
    fresh = await coupons.issue(shop, member.id, created["id"], source="mall", key="fresh", now=now)
    headers = await member_headers(client, shop, member)
    listed = await (await client.get(f"/api/mp/{shop.slug}/coupons", headers=headers)).json()
    assert [(c["id"], c["state"]) for c in listed["items"]] == [(fresh.id, "usable"), (old.id, "expired")]
    assert listed["items"][0]["description"] == "满100减20"
    assert " 至 " in listed["items"][0]["validity"]
    usable = await (await client.get(f"/api/mp/{shop.slug}/coupons?status=usable", headers=headers)).json()
    assert [c["id"] for c in usable["items"]] == [fresh.id]
    assert (await client.get(f"/api/mp/{shop.slug}/coupons?status=nope", headers=headers)).status == 400


async def test_cashier_checks_a_coupon_before_the_purchase(
    client: Any, shop: Merchant, member: Member, admin: dict[str, str]
) -> None:
    created = await new_template(client, admin, store_codes=["main"])
    coupon = await coupons.issue(
        shop, member.id, created["id"], source="mall", key="c", now=datetime.now(UTC)
    )
    cashier = await staff_headers(client, shop, "cashier")
    ok = await client.post(
        "/api/staff/coupons/check",
        headers=cashier,
        json={"member_code": member.code, "code": coupon.code, "order_fen": 12_000},
    )
    assert ok.status == 200, await ok.text()
    assert await ok.json() == {
        "coupon_id": coupon.id,
        "code": coupon.code,
        "kind": "fixed",
        "description": "满100减20",
        "discount_fen": 2_000,
        "gift_name": "",
        "pay_fen": 10_000,
    }
    low = await client.post(
        "/api/staff/coupons/check",
        headers=cashier,
        json={"member_id": member.id, "code": coupon.code, "order_fen": 5_000},
    )
    assert low.status == 409
    assert (await low.json())["error"] == {
        "code": "coupon_not_applicable",
        "message": "满 100.00 元可用",
        "field": "code",
    }
    unknown = await client.post(
        "/api/staff/coupons/check",
        headers=cashier,
        json={"member_id": member.id, "code": "ZZZZZZZZZZ", "order_fen": 5_000},
    )
    assert unknown.status == 404 and (await unknown.json())["error"]["code"] == "coupon_not_found"
    both = await client.post(
        "/api/staff/coupons/check",
        headers=cashier,
        json={"member_id": member.id, "member_code": member.code, "code": "X", "order_fen": 1},
    )
    assert both.status == 400
    assert (await Coupon.get(id=coupon.id)).status == CouponStatus.ISSUED  # a check changes nothing


# Chat -----------------------------------------------------------------------------------------------


def test_keyword_and_menu_key_are_registered() -> None:
    router = build_router()
    for word in ("优惠券", "coupons", "COUPON"):
        intent = router.by_keyword(word)
        assert intent is not None and intent.name == "coupons", word
    menu = router.by_menu_key("MENU_COUPONS")
    assert menu is not None and menu.name == "coupons"


async def _say(client: Any, shop: Merchant, content: str) -> str:
    message = IncomingMessage(openid="o-member-1", kind="text", created_at=datetime.now(UTC), content=content)
    reply = await client.app[DISPATCHER].dispatch(shop, message)
    assert isinstance(reply, TextReply)
    return reply.text


async def test_chat_lists_usable_coupons_with_codes(
    client: Any, shop: Merchant, member: Member, admin: dict[str, str]
) -> None:
    assert "暂时没有可用的优惠券" in await _say(client, shop, "优惠券")
    created = await new_template(client, admin)
    coupon = await coupons.issue(
        shop, member.id, created["id"], source="mall", key="chat", now=datetime.now(UTC)
    )
    reply = await _say(client, shop, "优惠券")
    assert "您有 1 张可用优惠券" in reply and coupon.code in reply and "满100减20" in reply
    assert "有效期至 " in reply
    assert "【优惠券】" in await _say(client, shop, "帮助")


async def test_revoke_with_a_member_refuses_another_members_coupon(
    client: Any, shop: Merchant, member: Member, admin: dict[str, str]
) -> None:
    other = await make_member(shop, "o-other")
    created = await new_template(client, admin)
    coupon_id = (await (await give(client, admin, member, created["id"], "k1")).json())["coupon"]["id"]
    wrong = await client.post(
        f"/api/admin/coupons/{coupon_id}/revoke",
        headers=admin,
        json={"reason": "误发", "member_id": other.id},
    )
    assert wrong.status == 404 and (await wrong.json())["error"]["code"] == "coupon_not_found"
    assert (await Coupon.get(id=coupon_id)).status == CouponStatus.ISSUED
    right = await client.post(
        f"/api/admin/coupons/{coupon_id}/revoke",
        headers=admin,
        json={"reason": "误发", "member_id": member.id},
    )
    assert right.status == 200 and (await Coupon.get(id=coupon_id)).status == CouponStatus.REVOKED
