"""One member's page in the back office, its collections' keyset pages, staff notes, and profile edits
validated like the member's own."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient
from tortoise.exceptions import OperationalError
from tortoise.transactions import in_transaction

from handlers.core.queries import fetch_rows
from handlers.loyalty import ledger
from handlers.mall import catalogue
from handlers.members import retention
from handlers.till import purchase as purchases
from handlers.wallet import ledger as wallet
from handlers.wallet import service_cards
from models.cards import CardKind
from models.loyalty import AuditLog, MemberTier, TierChange
from models.mall import ItemKind
from models.member import Gender, Member, MemberNote
from models.merchant import Merchant, Store
from models.notice import NoticeDelivery
from models.points import PointsKind
from models.staff import Staff
from tests.support.factories import EFFECTS, make_member, make_merchant, staff_headers
from tests.test_coupon_api import give as give_coupon
from tests.test_coupon_api import new_template

NOW = datetime.now(UTC)


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await make_merchant()


@pytest.fixture
async def manager(client: TestClient, shop: Merchant) -> dict[str, str]:
    return await staff_headers(client, shop, "manager")


async def rich_member(client: TestClient, shop: Merchant, manager: dict[str, str]) -> Member:
    """A member with a bit of everything: referrer, referrals, tier change, points, lots, stored value,
    a coupon, a service card, a mall order, purchases and the notices they caused."""
    main = await Store.get(merchant_id=shop.id, code="main")
    seller = await Staff.create(
        merchant_id=shop.id, store_id=main.id, username="seller", role="cashier", password_hash="x"
    )
    referrer = await make_member(shop, openid="o-referrer", name="老客")
    member = await make_member(
        shop, name="王芳", phone="13912345678", gender=Gender.FEMALE, birthday=date(1992, 3, 4),
        referrer=referrer, acquired_by=seller, store_id=main.id,
    )  # fmt: skip
    await make_member(shop, openid="o-friend-1", name="朋友一", referrer=member)
    await make_member(shop, openid="o-friend-2", name="朋友二", referrer=member)
    erased = await make_member(shop, openid="o-friend-3", referrer=member)
    await Member.filter(id=erased.id).update(anonymized_at=NOW)
    await MemberTier.create(merchant_id=shop.id, member_id=member.id, tier_code="silver", since=NOW)
    await TierChange.create(
        merchant_id=shop.id,
        member_id=member.id,
        from_code="normal",
        to_code="silver",
        reason="upgrade",
        idempotency_key="t",
    )
    await ledger.credit(
        shop.id, member.id, 1_000, PointsKind.GRANT, key="g1", now=NOW, expires_at=NOW + timedelta(days=10)
    )
    await ledger.credit(shop.id, member.id, 500, PointsKind.GRANT, key="g2", now=NOW, expires_at=None)
    await wallet.top_up(shop, member.id, 10_000, key="top", payment_method="cash", now=NOW, effects=EFFECTS)
    for n, amount in enumerate((5_000, 3_000, 2_000)):
        request = purchases.PurchaseRequest(f"p{n}", member.id, amount)
        await purchases.record_purchase(shop, None, request, now=NOW, effects=EFFECTS)
    admin = await staff_headers(client, shop, "admin")
    template = await new_template(client, admin)
    assert (await give_coupon(client, manager, member, template["id"], "c1")).status == 200
    product = await service_cards.create_product(
        shop, service_cards.ProductInput(CardKind.COUNT, "洗剪吹5次卡", "洗剪吹", 5, 90), actor="test"
    )
    await service_cards.issue(shop, member, product.id, source="granted", key="card", now=NOW, actor="test")
    item = await catalogue.create_item(
        shop, ItemKind.PICKUP, catalogue.ItemInput(name="保温杯", price_points=200), stock=5, actor="test"
    )
    await catalogue.redeem(shop, member, item.id, qty=1, client_key="mall", now=NOW, effects=EFFECTS)
    return await Member.get(id=member.id)


async def test_the_page_shows_everything_the_member_has(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    member = await rich_member(client, shop, manager)
    assert (
        await client.post(
            f"/api/admin/members/{member.id}/notes", json={"text": "电话回访，满意"}, headers=manager
        )
    ).status == 201
    response = await client.get(f"/api/admin/members/{member.id}", headers=manager)
    assert response.status == 200, await response.text()
    page = await response.json()
    profile = page["profile"]
    assert (profile["code"], profile["name"], profile["phone"], profile["gender"], profile["birthday"]) == (
        member.code, "王芳", "139****5678", "female", "1992-03-04",
    )  # fmt: skip
    assert (profile["lifetime_spend_fen"], profile["blocked"], profile["last_visit_at"] is not None) == (
        9_800,
        False,
        True,
    )
    assert page["store"] == {"id": member.store_id, "code": "main", "name": "总店"}
    assert page["acquired_by"]["username"] == "seller"
    assert (page["tier"]["code"], page["tier"]["name"]) == ("silver", "银卡")
    assert [(c["from_code"], c["to_code"], c["reason"]) for c in page["tier_history"]["items"]] == [
        ("normal", "silver", "upgrade")
    ]
    # Points: 1,000 + 500 granted; paid 49.00, 29.40 and 19.60 yuan (silver: 98%) at 1 point per yuan and
    # silver's ×1.2: 58 + 35 + 23; 200 redeemed.
    ledger_rows = page["points_ledger"]["items"]
    assert [(r["kind"], r["delta"]) for r in ledger_rows] == [
        ("spend_redemption", -200),
        ("earn_purchase", 23),
        ("earn_purchase", 35),
        ("earn_purchase", 58),
        ("grant", 500),
        ("grant", 1_000),
    ]
    assert page["points"]["balance"] == 1_416 == ledger_rows[0]["balance_after"]
    assert page["points"]["expiring_soon"]["points"] == 800  # the 200 redeemed came from the soonest lot
    lots = [
        (lot["amount"], lot["remaining"], lot["expires_at"] is None) for lot in page["points_lots"]["items"]
    ]
    assert lots[-2:] == [(500, 500, True), (1_000, 800, False)]
    assert page["wallet"] == {
        "principal_fen": 10_000,
        "bonus_fen": 0,
        "total_fen": 10_000,
        "lifetime_top_up_fen": 10_000,
    }
    assert [(t["kind"], t["principal_delta"]) for t in page["wallet_ledger"]["items"]] == [("top_up", 10_000)]
    assert [(c["name"], c["state"]) for c in page["coupons"]["items"]] == [("满100减20", "usable")]
    assert [(c["name"], c["uses_left"], c["status"]) for c in page["service_cards"]] == [
        ("洗剪吹5次卡", 5, "active")
    ]
    assert [(o["item_name"], o["points"], o["status"]) for o in page["mall_orders"]["items"]] == [
        ("保温杯", 200, "awaiting_pickup")
    ]
    assert [p["amount_fen"] for p in page["purchases"]["items"]] == [2_000, 3_000, 5_000]
    assert page["tags"] == []
    assert page["referrer"]["name"] == "老客"
    assert page["referrals_count"] == 2
    assert [r["name"] for r in page["referrals"]["items"]] == ["朋友二", "朋友一"]  # the erased one left out
    notice_kinds = {n["kind"] for n in page["notices"]["items"]}
    assert {"purchase_receipt", "wallet_top_up"} <= notice_kinds
    assert len(page["notices"]["items"]) == await NoticeDelivery.filter(member_id=member.id).count()
    assert [(n["text"], n["author"]) for n in page["notes"]["items"]] == [("电话回访，满意", "manager-user")]


async def test_each_collection_pages_by_keyset(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    member = await rich_member(client, shop, manager)
    for path in ("points-ledger", "purchases", "referrals", "points-lots"):
        seen: list[int] = []
        cursor: int | None = None
        while True:
            query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
            response = await client.get(f"/api/admin/members/{member.id}/{path}{query}", headers=manager)
            assert response.status == 200, await response.text()
            body = await response.json()
            seen += [item["id"] for item in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)), path
        expected = {"points-ledger": 6, "purchases": 3, "referrals": 2, "points-lots": 5}[path]
        assert len(seen) == expected, path
    for path in ("tier-history", "wallet-ledger", "coupons", "mall-orders", "notes"):
        response = await client.get(f"/api/admin/members/{member.id}/{path}", headers=manager)
        assert response.status == 200, (path, await response.text())
    bad = await client.get(f"/api/admin/members/{member.id}/purchases?limit=0", headers=manager)
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "limit"


async def test_an_erased_or_foreign_member_is_not_found(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    erased = await make_member(shop, openid="o-gone")
    await Member.filter(id=erased.id).update(anonymized_at=NOW)
    foreign = await make_member(await make_merchant("other"), openid="o-foreign")
    for member_id in (erased.id, foreign.id, 2**31 - 1):
        for path in ("", "/purchases", "/notes"):
            response = await client.get(f"/api/admin/members/{member_id}{path}", headers=manager)
            assert response.status == 404, (member_id, path)
            assert (await response.json())["error"]["code"] == "member_not_found"
        patched = await client.patch(f"/api/admin/members/{member_id}", json={"name": "某"}, headers=manager)
        assert patched.status == 404
    cashier = await staff_headers(client, shop, "cashier")
    assert (await client.get(f"/api/admin/members/{erased.id}", headers=cashier)).status == 403


# Notes --------------------------------------------------------------------------------------------


async def test_staff_notes_are_dated_authored_and_append_only(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    member = await make_member(shop, name="陈")
    cashier = await staff_headers(client, shop, "cashier")
    url = f"/api/admin/members/{member.id}/notes"
    first = await client.post(url, json={"text": "  到店咨询储值卡  "}, headers=cashier)
    assert first.status == 201, await first.text()
    note = await first.json()
    assert (note["text"], note["author"]) == ("到店咨询储值卡", "cashier-user")
    second = await client.post(url, json={"text": "多行\n备注"}, headers=manager)
    assert second.status == 201
    listed = await (await client.get(url, headers=manager)).json()
    assert [(n["text"], n["author"]) for n in listed["items"]] == [
        ("多行\n备注", "manager-user"),
        ("到店咨询储值卡", "cashier-user"),
    ]
    assert listed["next_cursor"] is None
    assert (await client.get(url, headers=cashier)).status == 403  # reading is the back office's
    too_long = await client.post(url, json={"text": "字" * 1001}, headers=manager)
    assert too_long.status == 400 and (await too_long.json())["error"]["field"] == "text"
    blank = await client.post(url, json={"text": "   "}, headers=manager)
    assert blank.status == 400 and (await blank.json())["error"] == {
        "code": "validation_error", "message": "备注内容 text 须为 1–1000 个字符", "field": "text",
    }  # fmt: skip
    assert await MemberNote.filter(member_id=member.id).count() == 2
    assert await AuditLog.filter(action="member.note", subject=f"member:{member.id}").count() == 2
    for sql in ("UPDATE member_note SET text = 'x'", "DELETE FROM member_note"):
        with pytest.raises(OperationalError, match="append-only"):
            async with in_transaction():
                await fetch_rows(sql)
    # Erasing the member (retention) takes their notes with the profile.
    await Member.filter(id=member.id).update(openid=None, unsubscribed_at=NOW - timedelta(days=31))
    await retention.erase_due(NOW)
    assert await MemberNote.filter(member_id=member.id).count() == 0


# Profile edits ------------------------------------------------------------------------------------


async def test_profile_edits_use_the_members_own_validation_and_are_audited(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    member = await make_member(shop, name="旧名", phone="13800138000")
    url = f"/api/admin/members/{member.id}"
    bad_inputs = {
        "phone": ({"name": "新名", "phone": "12345"}, "手机号格式不正确，请输入 11 位中国大陆手机号"),
        "birthday": ({"birthday": "1990-13-01"}, "生日格式不正确，请按 1990-05-20 的格式输入"),
        "gender": ({"gender": "unknown"}, "请回复 男、女 或 保密"),
        "name": ({"name": "<script>"}, "姓名须为 1–32 个字符"),
    }
    for field, (body, message) in bad_inputs.items():
        response = await client.patch(url, json=body, headers=manager)
        assert response.status == 400, field
        assert (await response.json())["error"] == {
            "code": "validation_error",
            "message": message,
            "field": field,
        }
    unchanged = await Member.get(id=member.id)
    assert (unchanged.name, unchanged.phone, unchanged.birthday) == ("旧名", "13800138000", None)
    assert await AuditLog.filter(action="member.profile").count() == 0

    body = {"name": "新名", "phone": "+86 139-0000-0001", "birthday": "1990年5月20日", "gender": "女"}
    response = await client.patch(url, json=body, headers=manager)
    assert response.status == 200, await response.text()
    out = await response.json()
    assert (out["name"], out["phone"], out["birthday"], out["gender"], out["profile_complete"]) == (
        "新名", "139****0001", "1990-05-20", "female", True,
    )  # fmt: skip
    stored = await Member.get(id=member.id)
    assert (stored.phone, stored.birthday, stored.gender) == ("13900000001", date(1990, 5, 20), Gender.FEMALE)
    [entry] = await AuditLog.filter(action="member.profile")
    manager_id = (await Staff.get(username="manager-user")).id
    assert (entry.actor, entry.subject) == (f"staff:{manager_id}", f"member:{member.id}")
    assert entry.detail == {
        "code": member.code,
        "before": {"name": "旧名", "phone": "138****8000", "birthday": None, "gender": None},
        "after": {"name": "新名", "phone": "139****0001", "birthday": "1990-05-20", "gender": "female"},
    }
    again = await client.patch(url, json={"name": "新名"}, headers=manager)
    assert again.status == 200
    assert await AuditLog.filter(action="member.profile").count() == 1  # nothing changed, nothing logged
    cashier = await staff_headers(client, shop, "cashier")
    assert (await client.patch(url, json={"name": "某"}, headers=cashier)).status == 403
    unknown = await client.patch(url, json={"nickname": "某"}, headers=manager)
    assert unknown.status == 400 and (await unknown.json())["error"]["field"] == "nickname"
