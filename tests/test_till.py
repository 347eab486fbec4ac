"""The till over HTTP: scan, purchase, refund, with staff auth and validation."""

from __future__ import annotations

import time
from typing import Any

from handlers.loyalty.ledger_audit import audit_points
from handlers.products import catalogue
from handlers.rules import cardtoken
from models.purchase import Purchase
from tests.conftest import SECRET
from tests.support.factories import make_member, make_merchant, staff_headers


async def test_scan_by_qr_and_by_code_shows_the_member(client: Any) -> None:
    merchant = await make_merchant()
    member = await make_member(merchant, phone="13812345678", name="王小明")
    headers = await staff_headers(client, merchant)
    token = cardtoken.issue(SECRET.encode(), merchant.id, member.id, int(time.time()))
    by_qr = await client.post("/api/staff/scan", json={"qr": token}, headers=headers)
    assert by_qr.status == 200, await by_qr.text()
    body = await by_qr.json()
    assert (body["member_code"], body["phone"], body["tier_code"], body["balance"]) == (
        member.code,
        "138****5678",
        "normal",
        0,
    )
    by_code = await client.post("/api/staff/scan", json={"member_code": member.code.lower()}, headers=headers)
    assert (await by_code.json())["member_id"] == member.id


async def test_an_old_qr_is_refused_at_the_till(client: Any) -> None:
    merchant = await make_merchant()
    member = await make_member(merchant)
    headers = await staff_headers(client, merchant)
    old = cardtoken.issue(SECRET.encode(), merchant.id, member.id, int(time.time()) - 180)
    response = await client.post("/api/staff/scan", json={"qr": old}, headers=headers)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "card_expired"


async def test_a_malformed_qr_is_refused_naming_qr(client: Any) -> None:
    """The scan names the input the cashier used: a bad `qr` is never reported as `member_code`."""
    merchant = await make_merchant()
    member = await make_member(merchant)
    headers = await staff_headers(client, merchant)
    expected = {
        "ZZZZZZZZ": (404, "member_not_found"),  # shaped like a member code, but nobody's
        "not-a-card!": (404, "member_not_found"),
        "1.2.3": (400, "card_invalid"),
        "   ": (400, "validation_error"),
    }
    for qr, (status, code) in expected.items():
        response = await client.post("/api/staff/scan", json={"qr": qr}, headers=headers)
        error = (await response.json())["error"]
        assert (response.status, error["code"], error.get("field")) == (status, code, "qr"), (qr, error)
    typed = await client.post("/api/staff/scan", json={"member_code": "ZZZZZZZZ"}, headers=headers)
    assert (await typed.json())["error"]["field"] == "member_code"
    token = cardtoken.issue(SECRET.encode(), merchant.id, member.id, int(time.time()))
    found = await client.post("/api/staff/scan", json={"qr": token}, headers=headers)
    assert found.status == 200


async def test_purchase_and_refund_over_http(client: Any) -> None:
    merchant = await make_merchant()
    member = await make_member(merchant)
    headers = await staff_headers(client, merchant)
    latte = catalogue.ProductInput(name="拿铁", category="coffee", price_fen=2_500)
    await catalogue.create_product(merchant.id, "latte", latte, actor="test")
    body = {
        "idempotency_key": "till-1",
        "member_code": member.code,
        "amount_fen": 5_000,
        "items": [{"sku": "latte", "qty": 2}],
    }
    first = await client.post("/api/staff/purchases", json=body, headers=headers)
    assert first.status == 200, await first.text()
    result = await first.json()
    assert result["points_earned"] == 50 and result["balance"] == 50 and not result["replayed"]
    retry = await client.post("/api/staff/purchases", json=body, headers=headers)
    assert (await retry.json())["replayed"] is True
    assert await Purchase.all().count() == 1
    refund = await client.post(
        f"/api/staff/purchases/{result['purchase_id']}/refund",
        json={"idempotency_key": "r-1"},
        headers=headers,
    )
    assert refund.status == 200 and (await refund.json())["balance"] == 0
    twice = await client.post(
        f"/api/staff/purchases/{result['purchase_id']}/refund",
        json={"idempotency_key": "r-2"},
        headers=headers,
    )
    assert twice.status == 409
    assert await audit_points() == []


async def test_bad_input_is_a_clear_400_and_changes_nothing(client: Any) -> None:
    merchant = await make_merchant()
    member = await make_member(merchant)
    headers = await staff_headers(client, merchant)
    cases = [
        ({"idempotency_key": "k", "member_id": member.id, "amount_fen": 0}, "amount_fen"),
        ({"idempotency_key": "k", "amount_fen": 100}, None),
        (
            {"idempotency_key": "k", "member_id": member.id, "amount_fen": 100, "points_offset": 50},
            "points_offset",
        ),
    ]
    for body, field in cases:
        response = await client.post("/api/staff/purchases", json=body, headers=headers)
        assert response.status == 400, (body, await response.text())
        error = (await response.json())["error"]
        assert error["code"] == "validation_error"
        if field:
            assert error.get("field") == field
    assert await Purchase.all().count() == 0


async def test_till_needs_a_staff_session(client: Any) -> None:
    response = await client.post("/api/staff/scan", json={"member_code": "X"})
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unauthorized"
