"""Admin loyalty configuration over HTTP: roles, validation naming the field, versions, the audit log."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.staff.accounts import create_staff
from models.loyalty import AuditLog, LoyaltyProgram, RuleSetVersion, TierSetVersion
from models.merchant import Merchant
from tests.support.factories import make_merchant

PASSWORD = "password-123"
ADMIN_ONLY = [
    ("GET", "/api/admin/rules"),
    ("PUT", "/api/admin/rules"),
    ("GET", "/api/admin/rules/versions/1"),
    ("GET", "/api/admin/tiers"),
    ("PUT", "/api/admin/tiers"),
    ("GET", "/api/admin/program"),
    ("PUT", "/api/admin/program"),
]
MANAGER_UP = [
    ("GET", "/api/admin/audit-log"),
    ("POST", "/api/admin/rules/simulate"),
    ("POST", "/api/admin/members/ABCD2345/points"),
    ("GET", "/api/admin/referrals/ranking"),
]
BASE_TIER = {"code": "basic", "name": "普通会员", "rank": 0}


async def login(
    client: TestClient, merchant: Merchant, role: str, username: str | None = None
) -> dict[str, str]:
    """A bearer header for a new staff account of `role`, logged in over HTTP."""
    username = username or f"{role}-{merchant.slug}"
    await create_staff(merchant, store_code=None, username=username, role=role, password=PASSWORD)
    response = await client.post(
        "/api/staff/login", json={"merchant": merchant.slug, "username": username, "password": PASSWORD}
    )
    assert response.status == 200, await response.text()
    return {"Authorization": f"Bearer {(await response.json())['token']}"}


async def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    return dict((await response.json())["error"])


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY + MANAGER_UP)
async def test_anonymous_and_cashier_are_refused(client: TestClient, method: str, path: str) -> None:
    shop = await make_merchant()
    cashier = await login(client, shop, "cashier")
    assert (await client.request(method, path, json={})).status == 401
    bogus = {"Authorization": "Bearer nope"}
    assert (await client.request(method, path, json={}, headers=bogus)).status == 401
    refused = await error_of(await client.request(method, path, json={}, headers=cashier), 403)
    assert refused["code"] == "forbidden"


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY)
async def test_configuration_needs_an_admin(client: TestClient, method: str, path: str) -> None:
    manager = await login(client, await make_merchant(), "manager")
    assert (await client.request(method, path, json={}, headers=manager)).status == 403


async def test_manager_reads_the_audit_log(client: TestClient) -> None:
    manager = await login(client, await make_merchant(), "manager")
    response = await client.get("/api/admin/audit-log", headers=manager)
    assert response.status == 200
    assert await response.json() == {"entries": [], "next_cursor": None}


async def test_rules_are_versioned_and_audited(client: TestClient) -> None:
    shop = await make_merchant()
    admin = await login(client, shop, "admin")
    first = await (await client.get("/api/admin/rules", headers=admin)).json()
    assert first["version"] == 1 and first["rules"]["points_per_yuan"] == "1"

    proposed = {"points_per_yuan": "2", "daily_cap": 500, "version": 42}
    response = await client.put("/api/admin/rules", json={"rules": proposed}, headers=admin)
    assert response.status == 200, await response.text()
    saved = await response.json()
    assert saved["version"] == 2 and saved["rules"]["points_per_yuan"] == "2"
    assert saved["rules"]["daily_cap"] == 500

    assert (await (await client.get("/api/admin/rules", headers=admin)).json())["version"] == 2
    old = await (await client.get("/api/admin/rules/versions/1", headers=admin)).json()
    assert old["rules"]["points_per_yuan"] == "1" and old["version"] == 1
    missing = await error_of(await client.get("/api/admin/rules/versions/9", headers=admin), 404)
    assert missing["field"] == "version"
    assert (await client.get("/api/admin/rules/versions/abc", headers=admin)).status == 404

    rows = await AuditLog.filter(merchant_id=shop.id)
    assert [(r.action, r.subject) for r in rows] == [("rules.replace", "v2")]
    assert rows[0].actor.startswith("staff:")


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ({"points_per_yuan": -1}, "rules.points_per_yuan"),
        ({"points_per_yuan": 1, "bands": [{"min_fen": "x", "multiplier": 2}]}, "rules.bands[0].min_fen"),
        ({"points_per_yuan": 1, "surprise": True}, "rules.surprise"),
        ({}, "rules.points_per_yuan"),
        ({"points_per_yuan": 1, "timezone": "Asia/Shang\x00hai"}, "rules.timezone"),
    ],
)
async def test_invalid_rules_name_the_field_and_change_nothing(
    client: TestClient, rules: dict[str, Any], field: str
) -> None:
    shop = await make_merchant()
    admin = await login(client, shop, "admin")
    error = await error_of(await client.put("/api/admin/rules", json={"rules": rules}, headers=admin), 400)
    assert error["field"] == field and error["code"] == "validation_error"
    assert await RuleSetVersion.filter(merchant_id=shop.id).count() <= 1
    assert not await AuditLog.filter(merchant_id=shop.id).exists()


async def test_body_shape_errors_are_400(client: TestClient) -> None:
    admin = await login(client, await make_merchant(), "admin")
    assert (await error_of(await client.put("/api/admin/rules", json={"rules": [1]}, headers=admin), 400))[
        "field"
    ] == "rules"
    assert (await client.put("/api/admin/rules", data=b"{not json", headers=admin)).status == 400
    deep: dict[str, Any] = {"points_per_yuan": 1}
    nested = deep
    for _ in range(12):
        nested["x"] = {}
        nested = nested["x"]
    assert (await error_of(await client.put("/api/admin/rules", json={"rules": deep}, headers=admin), 400))[
        "field"
    ] == "rules"


async def test_tiers_are_versioned_validated_and_audited(client: TestClient) -> None:
    shop = await make_merchant()
    admin = await login(client, shop, "admin")
    current = await (await client.get("/api/admin/tiers", headers=admin)).json()
    assert current["version"] == 1 and [t["code"] for t in current["tiers"]] == [
        "normal",
        "silver",
        "gold",
        "diamond",
    ]
    silver = {"code": "", "name": "银卡", "rank": 1, "criteria": {"window_days": 365, "spend_fen": 1}}
    bad = [BASE_TIER, silver]
    error = await error_of(await client.put("/api/admin/tiers", json={"tiers": bad}, headers=admin), 400)
    assert error["field"] == "tiers[1].code"
    assert await TierSetVersion.filter(merchant_id=shop.id).count() == 1

    response = await client.put("/api/admin/tiers", json={"tiers": [BASE_TIER]}, headers=admin)
    assert response.status == 200, await response.text()
    assert (await response.json())["version"] == 2
    assert [r.action for r in await AuditLog.filter(merchant_id=shop.id)] == ["tiers.replace"]


async def test_program_is_validated_and_audited(client: TestClient) -> None:
    shop = await make_merchant()
    admin = await login(client, shop, "admin")
    defaults = await (await client.get("/api/admin/program", headers=admin)).json()
    assert defaults["program"]["registration_bonus"] == 100

    for program, field in [
        ({"pending_days": 365}, "program.pending_days"),
        ({"referral": {"trigger": "never"}}, "program.referral.trigger"),
        ({"nope": 1}, "program.nope"),
    ]:
        response = await client.put("/api/admin/program", json={"program": program}, headers=admin)
        assert (await error_of(response, 400))["field"] == field
    assert not await LoyaltyProgram.filter(merchant_id=shop.id).exists()

    wanted = {"registration_bonus": 20, "referral": {"trigger": "registration", "level_points": [50, 5]}}
    response = await client.put("/api/admin/program", json={"program": wanted}, headers=admin)
    assert response.status == 200, await response.text()
    program = (await response.json())["program"]
    assert program["registration_bonus"] == 20 and program["referral"]["level_points"] == [50, 5]
    assert (await (await client.get("/api/admin/program", headers=admin)).json())["program"] == program
    assert [r.action for r in await AuditLog.filter(merchant_id=shop.id)] == ["program.replace"]


async def test_audit_log_pages_newest_first_and_stays_in_its_merchant(client: TestClient) -> None:
    shop, other = await make_merchant(), await make_merchant("other")
    admin = await login(client, shop, "admin")
    for days in (1, 2, 3):
        body = {"program": {"pending_days": days}}
        response = await client.put("/api/admin/program", json=body, headers=admin)
        assert response.status == 200
    page = await (await client.get("/api/admin/audit-log?limit=2", headers=admin)).json()
    assert [e["detail"]["settings"]["pending_days"] for e in page["entries"]] == [3, 2]
    assert page["next_cursor"] == page["entries"][-1]["id"]
    rest = await (
        await client.get(f"/api/admin/audit-log?limit=2&cursor={page['next_cursor']}", headers=admin)
    ).json()
    assert [e["detail"]["settings"]["pending_days"] for e in rest["entries"]] == [1]
    assert rest["next_cursor"] is None

    outsider = await login(client, other, "admin")
    assert (await (await client.get("/api/admin/audit-log", headers=outsider)).json())["entries"] == []
    for query, field in [("limit=0", "limit"), ("limit=101", "limit"), ("cursor=x", "cursor"), ("x=1", "x")]:
        response = await client.get(f"/api/admin/audit-log?{query}", headers=admin)
        assert (await error_of(response, 400))["field"] == field
