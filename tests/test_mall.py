"""Mall rules (pure) and the admin item API: validation, roles, and stock only through movements."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from handlers.core.queries import sum_of
from handlers.members.lookup import CODE_ALPHABET
from handlers.rules.errors import RuleError
from handlers.rules.mall import (
    ItemSpec,
    ItemTerms,
    MemberStanding,
    Refusal,
    in_window,
    is_pickup_code,
    new_pickup_code,
    normalise_pickup_code,
    refusal,
    remaining_limit,
    validate_item,
)
from models.coupon import CouponKind, CouponTemplate
from models.loyalty import AuditLog
from models.mall import MallItem, StockMovement
from models.merchant import Merchant
from tests.support.factories import make_merchant, staff_headers

NOW = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
TERMS = ItemTerms(
    active=True,
    stock=5,
    min_tier_rank=1,
    limit_per_member=3,
    limit_per_day=2,
    sale_starts_at=NOW - timedelta(days=1),
    sale_ends_at=NOW + timedelta(days=1),
)
OK = MemberStanding(tier_rank=1, bought_total=0, bought_today=0)


# Rules --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("terms", "standing", "qty", "expected"),
    [
        (TERMS, OK, 1, None),
        (TERMS, OK, 2, None),
        (TERMS, OK, 6, Refusal.STOCK),
        (TERMS, MemberStanding(0, 0, 0), 1, Refusal.TIER),
        (TERMS, MemberStanding(1, 2, 0), 2, Refusal.LIFETIME_LIMIT),
        (TERMS, MemberStanding(1, 1, 1), 2, Refusal.DAY_LIMIT),
        (TERMS, MemberStanding(1, 1, 1), 1, None),
    ],
)
def test_refusal_names_the_first_rule_that_fails(
    terms: ItemTerms, standing: MemberStanding, qty: int, expected: Refusal | None
) -> None:
    assert refusal(terms, standing, qty, NOW) == expected


def test_inactive_and_window_come_first_and_can_be_skipped() -> None:
    closed = ItemTerms(
        active=True,
        stock=0,
        min_tier_rank=9,
        limit_per_member=None,
        limit_per_day=None,
        sale_starts_at=NOW,
        sale_ends_at=NOW + timedelta(hours=1),
    )
    assert refusal(closed, OK, 1, NOW - timedelta(seconds=1)) == Refusal.WINDOW
    assert refusal(closed, OK, 1, NOW + timedelta(hours=1)) == Refusal.WINDOW  # the end is exclusive
    assert refusal(closed, OK, 1, NOW) == Refusal.TIER
    unlimited = ItemTerms(
        active=False,
        stock=0,
        min_tier_rank=0,
        limit_per_member=None,
        limit_per_day=None,
        sale_starts_at=None,
        sale_ends_at=None,
    )
    assert refusal(unlimited, OK, 1, NOW) == Refusal.INACTIVE
    live = replace(unlimited, active=True)
    assert refusal(live, OK, 1, NOW) == Refusal.STOCK
    assert refusal(live, OK, 1, NOW, check_stock=False) is None
    assert Refusal.DAY_LIMIT.message == "今日已达上限" and "库存不足" in Refusal.STOCK.message


@given(
    st.integers(0, 10),
    st.integers(0, 10),
    st.one_of(st.none(), st.integers(1, 10)),
    st.one_of(st.none(), st.integers(1, 10)),
    st.integers(1, 10),
)
def test_remaining_limit_is_what_the_limits_still_allow(
    total: int, today: int, lifetime: int | None, daily: int | None, qty: int
) -> None:
    terms = ItemTerms(
        active=True,
        stock=100,
        min_tier_rank=0,
        limit_per_member=lifetime,
        limit_per_day=daily,
        sale_starts_at=None,
        sale_ends_at=None,
    )
    standing = MemberStanding(0, total, min(today, total))
    left = remaining_limit(terms, standing)
    assert left is None or left >= 0
    allowed = refusal(terms, standing, qty, NOW) is None
    assert allowed == (left is None or qty <= left)


def test_window_bounds() -> None:
    assert in_window(None, None, NOW) and in_window(NOW, None, NOW) and not in_window(None, NOW, NOW)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"price_points": 0}, "price_points"),
        ({"limit_per_member": 0}, "limit_per_member"),
        ({"limit_per_day": 0}, "limit_per_day"),
        ({"min_tier_rank": 4}, "min_tier_rank"),
        ({"sale_starts_at": NOW, "sale_ends_at": NOW}, "sale_ends_at"),
        ({"sale_starts_at": datetime(2026, 1, 1)}, "sale_starts_at"),
        ({"image_url": "http://cdn.example.com/a.png"}, "image_url"),
        ({"image_url": "https:///a.png"}, "image_url"),
        ({"kind": "coupon"}, "coupon_template_id"),
        ({"has_coupon_template": True}, "coupon_template_id"),
        ({"kind": "stored_value"}, "stored_value_fen"),
        ({"stored_value_fen": 100}, "stored_value_fen"),
        ({"kind": "shipped", "cash_fen": 100}, "cash_fen"),
        ({"pickup_days": 0}, "pickup_days"),
    ],
)
def test_item_validation_names_the_field(changes: dict[str, Any], field: str) -> None:
    spec = ItemSpec(**{"kind": "pickup", "price_points": 10, **changes})
    with pytest.raises(RuleError) as caught:
        validate_item(spec, max_tier_rank=3)
    assert caught.value.field == field


def test_valid_items_of_every_kind() -> None:
    for spec in (
        ItemSpec("pickup", 10, cash_fen=500, image_url="https://cdn.example.com/a.png"),
        ItemSpec("shipped", 10, limit_per_member=1, limit_per_day=1),
        ItemSpec("coupon", 10, has_coupon_template=True),
        ItemSpec("stored_value", 10, stored_value_fen=1_000, sale_starts_at=NOW),
    ):
        validate_item(spec, max_tier_rank=3)


def test_pickup_codes() -> None:
    code = new_pickup_code(CODE_ALPHABET)
    assert is_pickup_code(code, CODE_ALPHABET)
    assert len({new_pickup_code(CODE_ALPHABET) for _ in range(50)}) == 50
    assert normalise_pickup_code(" abcd-2345 ") == "ABCD2345"
    assert not is_pickup_code("ABCD0123", CODE_ALPHABET) and not is_pickup_code("ABC", CODE_ALPHABET)


# Admin API ----------------------------------------------------------------------------------------

ITEM = {
    "kind": "pickup",
    "name": "保温杯",
    "price_points": 300,
    "stock": 20,
    "cash_fen": 990,
    "image_url": "https://cdn.example.com/cup.png",
    "limit_per_member": 2,
}


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await make_merchant()


@pytest.fixture
async def admin(client: TestClient, shop: Merchant) -> dict[str, str]:
    return await staff_headers(client, shop, "admin")


async def create(client: TestClient, headers: dict[str, str], **changes: Any) -> Any:
    return await client.post("/api/admin/mall/items", json={**ITEM, **changes}, headers=headers)


async def test_admin_creates_an_item_whose_stock_is_a_movement(
    client: TestClient, shop: Merchant, admin: dict[str, str]
) -> None:
    response = await create(client, admin)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert (body["kind"], body["stock"], body["price_points"]) == ("pickup", 20, 300)
    movement = await StockMovement.get(item_id=body["id"])
    assert (movement.reason, movement.delta, movement.stock_after) == ("restock", 20, 20)
    assert await AuditLog.filter(action="mall.item.create").count() == 1
    listed = await (await client.get("/api/admin/mall/items", headers=admin)).json()
    assert [i["id"] for i in listed["items"]] == [body["id"]]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"price_points": 0}, "price_points"),
        ({"limit_per_day": 0}, "limit_per_day"),
        ({"image_url": "http://cdn.example.com/cup.png"}, "image_url"),
        (
            {"sale_starts_at": "2026-05-02T00:00:00+08:00", "sale_ends_at": "2026-05-01T00:00:00+08:00"},
            "sale_ends_at",
        ),
        ({"sale_starts_at": "2026-05-02T00:00:00"}, "sale_starts_at"),
        ({"kind": "coupon"}, "coupon_template_id"),
        ({"kind": "stored_value", "cash_fen": 0}, "stored_value_fen"),
        ({"kind": "shipped"}, "cash_fen"),
        ({"price_points": "300"}, "price_points"),
        ({"unknown": 1}, "unknown"),
    ],
)
async def test_invalid_items_are_refused_and_nothing_is_created(
    client: TestClient, admin: dict[str, str], changes: dict[str, Any], field: str
) -> None:
    response = await create(client, admin, **changes)
    assert response.status == 400
    assert (await response.json())["error"]["field"] == field
    assert await MallItem.all().count() == 0 and await StockMovement.all().count() == 0


async def test_coupon_items_need_a_template_of_the_merchant(
    client: TestClient, shop: Merchant, admin: dict[str, str]
) -> None:
    other = await make_merchant("other")
    theirs = await CouponTemplate.create(
        merchant_id=other.id, name="券", kind=CouponKind.FIXED, amount_off_fen=100, valid_days=7
    )
    ours = await CouponTemplate.create(
        merchant_id=shop.id, name="券", kind=CouponKind.FIXED, amount_off_fen=100, valid_days=7
    )
    coupon = {"kind": "coupon", "cash_fen": 0}
    refused = await create(client, admin, **coupon, coupon_template_id=theirs.id)
    assert refused.status == 400 and (await refused.json())["error"]["field"] == "coupon_template_id"
    accepted = await create(client, admin, **coupon, coupon_template_id=ours.id)
    assert accepted.status == 201 and (await accepted.json())["coupon_template_id"] == ours.id


async def test_roles(client: TestClient, shop: Merchant, admin: dict[str, str]) -> None:
    manager = await staff_headers(client, shop, "manager")
    cashier = await staff_headers(client, shop, "cashier")
    assert (await create(client, manager)).status == 403
    item_id = (await (await create(client, admin)).json())["id"]
    assert (await client.get("/api/admin/mall/items", headers=cashier)).status == 403
    assert (await client.get(f"/api/admin/mall/items/{item_id}", headers=manager)).status == 200
    put = await client.put(
        f"/api/admin/mall/items/{item_id}", json={"name": "x", "price_points": 1}, headers=manager
    )
    assert put.status == 403
    stock = {"delta": 5, "reason": "restock", "idempotency_key": "r1"}
    stock_url = f"/api/admin/mall/items/{item_id}/stock"
    assert (await client.post(stock_url, json=stock, headers=cashier)).status == 403
    assert (await client.post(stock_url, json=stock, headers=manager)).status == 200
    assert (await client.get("/api/admin/mall/items")).status == 401


async def test_put_replaces_fields_but_not_kind_or_stock(
    client: TestClient, shop: Merchant, admin: dict[str, str]
) -> None:
    item_id = (await (await create(client, admin)).json())["id"]
    url = f"/api/admin/mall/items/{item_id}"
    changed = {"name": "大保温杯", "price_points": 500, "active": False, "sort": 3}
    body = await (await client.put(url, json=changed, headers=admin)).json()
    assert (body["name"], body["price_points"], body["active"], body["stock"], body["cash_fen"]) == (
        "大保温杯",
        500,
        False,
        20,
        0,
    )
    assert (await client.put(url, json={**changed, "stock": 99}, headers=admin)).status == 400
    assert (await client.put(url, json={**changed, "kind": "shipped"}, headers=admin)).status == 400
    other = await make_merchant("other")
    other_admin = await staff_headers(client, other, "admin", username="other-admin")
    assert (await client.put(url, json=changed, headers=other_admin)).status == 404
    assert (await client.get(url, headers=other_admin)).status == 404


async def test_stock_adjustments_are_idempotent_and_never_go_below_zero(
    client: TestClient, shop: Merchant, admin: dict[str, str]
) -> None:
    item_id = (await (await create(client, admin, stock=5)).json())["id"]
    url = f"/api/admin/mall/items/{item_id}/stock"
    first = await (
        await client.post(
            url, json={"delta": 10, "reason": "restock", "idempotency_key": "r1"}, headers=admin
        )
    ).json()
    assert (first["stock_after"], first["replayed"]) == (15, False)
    again = await (
        await client.post(
            url, json={"delta": 10, "reason": "restock", "idempotency_key": "r1"}, headers=admin
        )
    ).json()
    assert (again["movement_id"], again["replayed"]) == (first["movement_id"], True)
    mismatch = await client.post(
        url, json={"delta": 11, "reason": "restock", "idempotency_key": "r1"}, headers=admin
    )
    assert mismatch.status == 409 and (await mismatch.json())["error"]["code"] == "idempotency_mismatch"
    below = await client.post(
        url, json={"delta": -16, "reason": "adjust", "idempotency_key": "a1"}, headers=admin
    )
    assert below.status == 409 and "库存不足" in (await below.json())["error"]["message"]
    negative_restock = await client.post(
        url, json={"delta": -1, "reason": "restock", "idempotency_key": "a2"}, headers=admin
    )
    assert negative_restock.status == 400
    taken = await (
        await client.post(
            url, json={"delta": -15, "reason": "adjust", "idempotency_key": "a3"}, headers=admin
        )
    ).json()
    assert taken["stock_after"] == 0
    item = await MallItem.get(id=item_id)
    assert item.stock == 0 == await sum_of(StockMovement.filter(item_id=item_id), "delta")
    missing = await client.post(
        "/api/admin/mall/items/999999/stock",
        json={"delta": 1, "reason": "restock", "idempotency_key": "x"},
        headers=admin,
    )
    assert missing.status == 404
