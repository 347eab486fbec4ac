"""Manual grants and deductions over HTTP: ledger postings, refusals, idempotency and the audit row."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from handlers.loyalty.ledger_audit import audit_points
from models.loyalty import AuditLog
from models.points import PointsAccount, PointsKind, PointsTransaction
from tests.support.factories import make_member, make_merchant
from tests.test_admin_loyalty import error_of, login


def url(code: str) -> str:
    return f"/api/admin/members/{code}/points"


async def balance(member_id: int) -> int:
    account = await PointsAccount.get_or_none(member_id=member_id)
    return account.balance if account is not None else 0


async def test_grant_then_deduct_with_audit_rows(client: TestClient) -> None:
    shop = await make_merchant()
    member = await make_member(shop)
    manager = await login(client, shop, "manager")
    body = {"delta": 120, "reason": "门店活动补发", "idempotency_key": "g-1"}
    response = await client.post(url(member.code), json=body, headers=manager)
    assert response.status == 200, await response.text()
    granted = await response.json()
    assert granted["kind"] == "grant" and granted["balance_after"] == 120 and not granted["replayed"]

    response = await client.post(
        url(member.code.lower()),
        json={"delta": -20, "reason": "录入错误更正", "idempotency_key": "g-2"},
        headers=manager,
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["kind"] == "adjust"
    assert await balance(member.id) == 100

    txns = await PointsTransaction.filter(member_id=member.id).order_by("id")
    assert [(t.kind, t.delta, t.reason) for t in txns] == [
        (PointsKind.GRANT, 120, "门店活动补发"),
        (PointsKind.ADJUST, -20, "录入错误更正"),
    ]
    assert txns[0].actor == txns[1].actor and txns[0].actor.startswith("staff:")
    rows = await AuditLog.filter(merchant_id=shop.id).order_by("id")
    assert [(r.action, r.subject, r.detail["delta"], r.actor) for r in rows] == [
        ("points.grant", member.code, 120, txns[0].actor),
        ("points.deduct", member.code, -20, txns[0].actor),
    ]
    assert rows[0].detail["transaction_id"] == txns[0].id
    assert await audit_points() == []


async def test_deduction_below_zero_is_refused_and_changes_nothing(client: TestClient) -> None:
    shop = await make_merchant()
    member = await make_member(shop)
    manager = await login(client, shop, "manager")
    await client.post(
        url(member.code), json={"delta": 50, "reason": "补发", "idempotency_key": "a"}, headers=manager
    )
    body = {"delta": -51, "reason": "扣减", "idempotency_key": "b"}
    response = await client.post(url(member.code), json=body, headers=manager)
    error = await error_of(response, 409)
    assert error["code"] == "insufficient_points" and error["field"] == "delta"
    assert "积分不足" in error["message"]
    assert await balance(member.id) == 50
    assert await PointsTransaction.filter(member_id=member.id).count() == 1
    assert await AuditLog.filter(merchant_id=shop.id).count() == 1
    assert await audit_points() == []


async def test_replayed_key_posts_once_and_a_changed_request_conflicts(client: TestClient) -> None:
    shop = await make_merchant()
    member = await make_member(shop)
    manager = await login(client, shop, "manager")
    body = {"delta": 30, "reason": "补发", "idempotency_key": "same-key"}
    responses = await asyncio.gather(
        *(client.post(url(member.code), json=body, headers=manager) for _ in range(4))
    )
    results = [await r.json() for r in responses]
    assert all(r.status == 200 for r in responses), results
    assert sorted(r["replayed"] for r in results) == [False, True, True, True]
    assert {r["transaction_id"] for r in results} == {results[0]["transaction_id"]}
    assert await balance(member.id) == 30
    assert await AuditLog.filter(merchant_id=shop.id).count() == 1

    changed = {**body, "delta": 31}
    error = await error_of(await client.post(url(member.code), json=changed, headers=manager), 409)
    assert error["code"] == "idempotency_mismatch"
    assert await balance(member.id) == 30
    assert await audit_points() == []


async def test_bad_requests_are_400_or_404_and_change_nothing(client: TestClient) -> None:
    shop = await make_merchant()
    member = await make_member(shop)
    manager = await login(client, shop, "manager")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"delta": 10, "idempotency_key": "k"}, "reason"),
        ({"delta": 10, "reason": "   ", "idempotency_key": "k"}, "reason"),
        ({"delta": 10, "reason": "x" * 201, "idempotency_key": "k"}, "reason"),
        ({"delta": 0, "reason": "补发", "idempotency_key": "k"}, "delta"),
        ({"delta": "10", "reason": "补发", "idempotency_key": "k"}, "delta"),
        ({"delta": True, "reason": "补发", "idempotency_key": "k"}, "delta"),
        ({"delta": 10, "reason": "补发"}, "idempotency_key"),
        ({"delta": 10, "reason": "补发", "idempotency_key": "has space"}, "idempotency_key"),
    ]
    for body, field in cases:
        error = await error_of(await client.post(url(member.code), json=body, headers=manager), 400)
        assert error["field"] == field, (body, error)
    body = {"delta": 10, "reason": "补发", "idempotency_key": "k"}
    assert (await error_of(await client.post(url("ZZZZ9999"), json=body, headers=manager), 404))[
        "code"
    ] == "member_not_found"
    other_shop = await make_merchant("other")
    stranger = await make_member(other_shop, openid="o-other")
    assert (await client.post(url(stranger.code), json=body, headers=manager)).status == 404
    assert not await PointsTransaction.exists()
    assert not await AuditLog.exists()
