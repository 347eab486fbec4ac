"""Console pages of stores, staff and the audit log over HTTP."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from handlers.staff.sessions import SessionStore
from models.merchant import Merchant, Store
from models.staff import Staff
from tests.support.console import PASSWORD, login, make_staff, page_csrf
from tests.support.factories import make_merchant
from webhooks.appkeys import REDIS


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    await make_staff(merchant, "carl", "cashier")
    return merchant


async def test_admin_opens_and_closes_a_store(client: TestClient, shop: Merchant) -> None:
    assert (await login(client, "shop", "alice")).status == 303
    token = await page_csrf(client, "/admin/stores")
    taken = await client.post("/admin/stores", data={"csrf_token": token, "code": "main", "name": "重复"})
    assert taken.status == 400
    html = await taken.text()
    assert 'data-field="store.' in html and 'name="name" value="重复"' in html
    opened = await client.post(
        "/admin/stores",
        data={"csrf_token": token, "code": "east", "name": "东区店", "address": "东大街 1 号"},
        allow_redirects=False,
    )
    assert opened.status == 303
    east = await Store.get(merchant_id=shop.id, code="east")
    closed = await client.post(
        f"/admin/stores/{east.id}/close", data={"csrf_token": token}, allow_redirects=False
    )
    assert closed.status == 303
    assert (await Store.get(id=east.id)).closed_at is not None
    main = await Store.get(merchant_id=shop.id, code="main")
    refused = await client.post(f"/admin/stores/{main.id}/close", data={"csrf_token": token})
    assert refused.status == 400  # active staff belong to it
    assert f'data-field="store{main.id}.' in await refused.text()


async def test_a_manager_creates_a_cashier_and_deactivation_ends_its_sessions(
    client: TestClient, shop: Merchant
) -> None:
    assert (await login(client, "shop", "mona")).status == 303
    html = await (await client.get("/admin/stores")).text()
    assert "新开门店" not in html and 'data-staff="carl"' in html and 'data-staff="alice"' not in html
    token = await page_csrf(client, "/admin/stores")
    main = await Store.get(merchant_id=shop.id, code="main")
    short = await client.post(
        "/admin/staff",
        data={"csrf_token": token, "username": "cathy", "password": "short", "role": "cashier"},
    )
    assert short.status == 400
    body = await short.text()
    assert 'data-field="new.password"' in body and 'name="username" value="cathy"' in body
    assert "short" not in body.replace("shortcut", "")  # a password is never echoed
    made = await client.post(
        "/admin/staff",
        data={
            "csrf_token": token,
            "username": "cathy",
            "password": PASSWORD,
            "role": "cashier",
            "store_id": str(main.id),
        },
        allow_redirects=False,
    )
    assert made.status == 303, await made.text()
    cathy = await Staff.get(username="cathy")
    api = await client.post(
        "/api/staff/login", json={"merchant": "shop", "username": "cathy", "password": PASSWORD}
    )
    bearer = (await api.json())["token"]
    gone = await client.post(
        f"/admin/staff/{cathy.id}/deactivate", data={"csrf_token": token}, allow_redirects=False
    )
    assert gone.status == 303
    assert await SessionStore(client.app[REDIS]).resolve(bearer) is None
    alice = await Staff.get(username="alice")
    assert (await client.post(f"/admin/staff/{alice.id}/deactivate", data={"csrf_token": token})).status in (
        400,
        404,
    )
    assert (await Staff.get(id=alice.id)).active


async def test_admin_resets_a_password_and_unlocks(client: TestClient, shop: Merchant) -> None:
    for _ in range(5):
        await client.post(
            "/api/staff/login", json={"merchant": "shop", "username": "carl", "password": "bad-bad-bad"}
        )
    assert (await login(client, "shop", "alice")).status == 303
    html = await (await client.get("/admin/stores")).text()
    assert "已锁定至" in html
    carl = await Staff.get(username="carl")
    token = await page_csrf(client, "/admin/stores")
    await client.post(f"/admin/staff/{carl.id}/unlock", data={"csrf_token": token})
    reset = await client.post(
        f"/admin/staff/{carl.id}/password",
        data={"csrf_token": token, "password": "battery-staple-2"},
        allow_redirects=False,
    )
    assert reset.status == 303
    ok = await client.post(
        "/api/staff/login", json={"merchant": "shop", "username": "carl", "password": "battery-staple-2"}
    )
    assert ok.status == 200


async def test_the_audit_log_lists_changes_newest_first(client: TestClient, shop: Merchant) -> None:
    assert (await login(client, "shop", "alice")).status == 303
    token = await page_csrf(client, "/admin/stores")
    await client.post("/admin/stores", data={"csrf_token": token, "code": "west", "name": "西区店"})
    html = await (await client.get("/admin/audit")).text()
    assert "store.create" in html and "<td>alice</td>" in html  # the actor by name
    assert (await client.get("/admin/audit?cursor=abc")).status == 400
