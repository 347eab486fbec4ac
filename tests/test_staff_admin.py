"""Staff accounts in the back office: who may list, create, change, deactivate, reset and unlock whom;
deactivation and a password reset end the account's sessions at once; the lockout stays per account."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.staff import stores
from handlers.staff.accounts import create_staff
from handlers.staff.sessions import SessionKind, SessionStore
from models.loyalty import AuditLog
from models.merchant import Merchant, Store
from models.staff import Staff
from tests.support.factories import make_merchant
from webhooks.appkeys import REDIS

PASSWORD = "correct-horse-1"
NEW_PASSWORD = "battery-staple-2"


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    """Store A (`main`) with admin alice, manager mona and cashier carl; store B with manager bob and
    cashier bella."""
    merchant = await make_merchant()
    await stores.create_store(merchant.id, "b", stores.StoreInput("B 店"), actor="test")
    for username, role, store in (
        ("alice", "admin", None),
        ("mona", "manager", "main"),
        ("carl", "cashier", "main"),
        ("bob", "manager", "b"),
        ("bella", "cashier", "b"),
    ):
        await create_staff(merchant, store_code=store, username=username, role=role, password=PASSWORD)
    return merchant


async def login(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    return await client.post(
        "/api/staff/login", json={"merchant": "shop", "username": username, "password": password}
    )


async def headers(client: TestClient, username: str) -> dict[str, str]:
    response = await login(client, username)
    assert response.status == 200, await response.text()
    return {"Authorization": f"Bearer {(await response.json())['token']}"}


async def staff_id(username: str) -> int:
    return (await Staff.get(username=username)).id


async def store_id(code: str) -> int:
    return (await Store.get(code=code)).id


async def test_admin_creates_lists_and_moves_staff_with_an_audit_trail(
    client: TestClient, shop: Merchant
) -> None:
    admin = await headers(client, "alice")
    b = await store_id("b")
    created = await client.post(
        "/api/admin/staff",
        json={"username": "cindy", "password": PASSWORD, "role": "cashier", "store_id": b},
        headers=admin,
    )
    assert created.status == 201, await created.text()
    body = await created.json()
    cindy = await staff_id("cindy")
    assert {k: v for k, v in body.items() if k != "created_at"} == {
        "id": cindy,
        "username": "cindy",
        "role": "cashier",
        "store_id": b,
        "active": True,
        "locked_until": None,
    }
    assert (await login(client, "cindy")).status == 200
    taken = await client.post(
        "/api/admin/staff",
        json={"username": "cindy", "password": PASSWORD, "role": "cashier", "store_id": b},
        headers=admin,
    )
    assert taken.status == 409 and (await taken.json())["error"]["field"] == "username"
    listed = await (await client.get(f"/api/admin/staff?store_id={b}", headers=admin)).json()
    assert [s["username"] for s in listed["items"]] == ["bob", "bella", "cindy"]
    cashiers = await (await client.get("/api/admin/staff?role=cashier&limit=2", headers=admin)).json()
    assert [s["username"] for s in cashiers["items"]] == ["carl", "bella"]
    rest = await client.get(f"/api/admin/staff?role=cashier&cursor={cashiers['next_cursor']}", headers=admin)
    assert [s["username"] for s in (await rest.json())["items"]] == ["cindy"]
    main = await store_id("main")
    moved = await client.patch(
        f"/api/admin/staff/{cindy}", json={"role": "manager", "store_id": main}, headers=admin
    )
    assert moved.status == 200, await moved.text()
    assert ((await moved.json())["role"], (await moved.json())["store_id"]) == ("manager", main)
    no_store = await client.patch(f"/api/admin/staff/{cindy}", json={"store_id": None}, headers=admin)
    error = (await no_store.json())["error"]
    assert (no_store.status, error["field"]) == (400, "store_id")
    rows = await AuditLog.filter(action__startswith="staff.").order_by("id")
    alice = await staff_id("alice")
    assert [(r.actor, r.action, r.subject, r.detail) for r in rows] == [
        (
            f"staff:{alice}",
            "staff.create",
            f"staff:{cindy}",
            {"username": "cindy", "role": "cashier", "store_id": b},
        ),
        (
            f"staff:{alice}",
            "staff.update",
            f"staff:{cindy}",
            {"before": {"role": "cashier", "store_id": b}, "after": {"role": "manager", "store_id": main}},
        ),
    ]


async def test_a_manager_sees_and_manages_only_the_cashiers_of_their_own_store(
    client: TestClient, shop: Merchant
) -> None:
    mona = await headers(client, "mona")
    main, b = await store_id("main"), await store_id("b")
    listed = await (await client.get("/api/admin/staff", headers=mona)).json()
    assert [s["username"] for s in listed["items"]] == ["mona", "carl"]
    other_store = await client.get(f"/api/admin/staff?store_id={b}", headers=mona)
    assert (other_store.status, (await other_store.json())["error"]["code"]) == (403, "forbidden")
    bella, bob, carl = await staff_id("bella"), await staff_id("bob"), await staff_id("carl")
    for path in (f"{bella}", f"{bella}/deactivate", f"{bella}/reactivate", f"{bella}/password"):
        method = "GET" if "/" not in path else "POST"
        response = await client.request(
            method, f"/api/admin/staff/{path}", json={"password": NEW_PASSWORD}, headers=mona
        )
        assert response.status == 404, (path, await response.text())
    new = {"username": "dora", "password": PASSWORD}
    elsewhere = await client.post("/api/admin/staff", json={**new, "store_id": b}, headers=mona)
    assert elsewhere.status == 403 and (await elsewhere.json())["error"]["field"] == "store_id"
    manager = await client.post("/api/admin/staff", json={**new, "role": "manager"}, headers=mona)
    assert manager.status == 403 and (await manager.json())["error"]["field"] == "role"
    dora = await client.post("/api/admin/staff", json=new, headers=mona)
    assert dora.status == 201 and (await dora.json())["store_id"] == main
    assert (
        await client.patch(f"/api/admin/staff/{carl}", json={"role": "manager"}, headers=mona)
    ).status == 403
    assert (await client.post(f"/api/admin/staff/{carl}/unlock", headers=mona)).status == 403
    bob_headers = await headers(client, "bob")
    peer = await client.post(f"/api/admin/staff/{await staff_id('mona')}/deactivate", headers=bob_headers)
    assert peer.status == 404
    same_store_manager = await create_staff(
        shop, store_code="main", username="max", role="manager", password=PASSWORD
    )
    refused = await client.post(f"/api/admin/staff/{same_store_manager.id}/deactivate", headers=mona)
    assert (
        refused.status == 403 and (await refused.json())["error"]["message"] == "店长只能管理本门店的收银员"
    )
    done = await client.post(f"/api/admin/staff/{carl}/deactivate", headers=mona)
    assert done.status == 200 and (await done.json())["active"] is False
    assert [(s.username, s.active) for s in await Staff.filter(id__in=[bella, bob]).order_by("id")] == [
        ("bob", True),
        ("bella", True),
    ]
    cashier = await headers(client, "bella")
    assert (await client.get("/api/admin/staff", headers=cashier)).status == 403


async def test_deactivation_ends_the_accounts_sessions_at_once(client: TestClient, shop: Merchant) -> None:
    admin = await headers(client, "alice")
    carl = await headers(client, "carl")
    other_session = await headers(client, "carl")
    assert (await client.get("/api/staff/me", headers=carl)).status == 200
    response = await client.post(f"/api/admin/staff/{await staff_id('carl')}/deactivate", headers=admin)
    assert response.status == 200 and (await response.json())["active"] is False
    for token in (carl, other_session):
        refused = await client.get("/api/staff/me", headers=token)
        assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
        revoked = await SessionStore(client.app[REDIS]).resolve(
            token["Authorization"].removeprefix("Bearer ")
        )
        assert revoked is None
    assert (await login(client, "carl")).status == 401
    back = await client.post(f"/api/admin/staff/{await staff_id('carl')}/reactivate", headers=admin)
    assert back.status == 200 and (await back.json())["active"] is True
    assert (await client.get("/api/staff/me", headers=carl)).status == 401  # old sessions stay ended
    assert (await client.get("/api/staff/me", headers=await headers(client, "carl"))).status == 200
    actions = (
        await AuditLog.filter(action__startswith="staff.").order_by("id").values_list("action", flat=True)
    )
    assert actions == ["staff.deactivate", "staff.reactivate"]


async def test_a_password_reset_follows_the_rules_and_ends_the_sessions(
    client: TestClient, shop: Merchant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mona = await headers(client, "mona")
    carl_id = await staff_id("carl")
    carl = await headers(client, "carl")
    short = await client.post(
        f"/api/admin/staff/{carl_id}/password", json={"password": "short"}, headers=mona
    )
    error = (await short.json())["error"]
    assert (short.status, error["field"], error["message"]) == (400, "password", "password 至少 8 个字符")
    # A login that checked the old password just before the reset gets a session of the old epoch.
    carl_row = await Staff.get(id=carl_id)
    racing = await SessionStore(client.app[REDIS]).issue(
        SessionKind.STAFF, shop.id, carl_id, data={"epoch": str(carl_row.session_epoch)}
    )
    reset = await client.post(
        f"/api/admin/staff/{carl_id}/password", json={"password": NEW_PASSWORD}, headers=mona
    )
    assert reset.status == 200, await reset.text()
    assert (await client.get("/api/staff/me", headers=carl)).status == 401
    late = await SessionStore(client.app[REDIS]).issue(
        SessionKind.STAFF, shop.id, carl_id, data={"epoch": str(carl_row.session_epoch)}
    )
    for token in (racing.token, late.token):
        assert (await client.get("/api/staff/me", headers={"Authorization": f"Bearer {token}"})).status == 401
    assert (await login(client, "carl")).status == 401
    assert (await login(client, "carl", NEW_PASSWORD)).status == 200
    assert (await client.get("/api/staff/me", headers=mona)).status == 200  # the manager's own session stays
    rows = await AuditLog.filter(action="staff.password_reset")
    assert [(r.subject, r.detail) for r in rows] == [(f"staff:{carl_id}", {})]
    assert NEW_PASSWORD not in caplog.text
    assert all(NEW_PASSWORD not in str(row.detail) for row in await AuditLog.all())


async def test_an_admin_unlocks_one_locked_account_and_the_lockout_stays_per_account(
    client: TestClient, shop: Merchant
) -> None:
    for attempt in range(5):
        await login(client, "carl", f"wrong-{attempt}")
    assert (await login(client, "carl")).status == 423
    assert (await login(client, "bella")).status == 200  # another account is not affected
    carl_id = await staff_id("carl")
    mona = await headers(client, "mona")
    assert (await client.post(f"/api/admin/staff/{carl_id}/unlock", headers=mona)).status == 403
    reset = await client.post(
        f"/api/admin/staff/{carl_id}/password", json={"password": NEW_PASSWORD}, headers=mona
    )
    assert reset.status == 200 and (await reset.json())["locked_until"] is not None  # a reset does not unlock
    assert (await login(client, "carl", NEW_PASSWORD)).status == 423
    admin = await headers(client, "alice")
    listed = await (await client.get(f"/api/admin/staff/{carl_id}", headers=admin)).json()
    assert listed["locked_until"] is not None
    unlocked = await client.post(f"/api/admin/staff/{carl_id}/unlock", headers=admin)
    assert unlocked.status == 200 and (await unlocked.json())["locked_until"] is None
    assert (await login(client, "carl", NEW_PASSWORD)).status == 200
    row = await AuditLog.get(action="staff.unlock")
    assert (row.subject, row.detail["failed_logins"], row.detail["locked_until"] is not None) == (
        f"staff:{carl_id}",
        0,
        True,
    )


async def test_nobody_manages_their_own_account_here(client: TestClient, shop: Merchant) -> None:
    admin = await headers(client, "alice")
    alice = await staff_id("alice")
    for path, body in (
        (f"{alice}/deactivate", None),
        (f"{alice}/password", {"password": NEW_PASSWORD}),
    ):
        response = await client.post(f"/api/admin/staff/{path}", json=body, headers=admin)
        assert response.status == 403, (path, await response.text())
    demote = await client.patch(f"/api/admin/staff/{alice}", json={"role": "cashier"}, headers=admin)
    assert demote.status == 403
    assert (await client.get("/api/staff/me", headers=admin)).status == 200
    assert (await Staff.get(id=alice)).role == "admin"
    empty = await client.patch(f"/api/admin/staff/{alice}", json={}, headers=admin)
    assert empty.status == 400 and (await empty.json())["error"]["message"] == "role 和 store_id 至少填写一个"


async def test_staff_cannot_join_a_closed_store(client: TestClient, shop: Merchant) -> None:
    admin = await headers(client, "alice")
    b = await store_id("b")
    bob, bella = await staff_id("bob"), await staff_id("bella")
    for target in (bob, bella):
        assert (await client.post(f"/api/admin/staff/{target}/deactivate", headers=admin)).status == 200
    assert (await client.post(f"/api/admin/stores/{b}/close", headers=admin)).status == 200
    new = {"username": "ella", "password": PASSWORD, "role": "cashier", "store_id": b}
    joined = await client.post("/api/admin/staff", json=new, headers=admin)
    assert joined.status == 409 and (await joined.json())["error"]["field"] == "store_id"
    moved = await client.patch(
        f"/api/admin/staff/{await staff_id('carl')}", json={"store_id": b}, headers=admin
    )
    assert moved.status == 409
    back = await client.post(f"/api/admin/staff/{bella}/reactivate", headers=admin)
    assert back.status == 409 and "已停业" in (await back.json())["error"]["message"]
    main = await store_id("main")
    assert (
        await client.patch(f"/api/admin/staff/{bella}", json={"store_id": main}, headers=admin)
    ).status == 200
    assert (await client.post(f"/api/admin/staff/{bella}/reactivate", headers=admin)).status == 200
    assert (await login(client, "bella")).status == 200
