"""Stores in the back office: create, edit, close, reopen; managers see only their own store; each
purchase, pick-up and top-up records the store it happened at."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.core.errors import Forbidden, NotFound
from handlers.loyalty import config as loyalty_config
from handlers.mall import catalogue
from handlers.staff import stores
from handlers.staff.accounts import create_staff
from handlers.staff.scope import Scope, activity_store_id, scope_of
from models.loyalty import AuditLog
from models.mall import MallOrder
from models.merchant import Merchant, Store
from models.purchase import Purchase
from models.staff import Staff
from models.wallet import WalletTransaction
from tests.support.factories import EFFECTS, make_member, make_merchant
from tests.test_mall_orders import give, make_item

PASSWORD = "correct-horse-1"


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    for username, role in (("alice", "admin"), ("mona", "manager"), ("carl", "cashier")):
        await create_staff(merchant, store_code="main", username=username, role=role, password=PASSWORD)
    return merchant


async def headers(client: TestClient, username: str) -> dict[str, str]:
    response = await client.post(
        "/api/staff/login", json={"merchant": "shop", "username": username, "password": PASSWORD}
    )
    assert response.status == 200, await response.text()
    return {"Authorization": f"Bearer {(await response.json())['token']}"}


def public(store: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in store.items() if k != "created_at"}


async def test_an_admin_creates_edits_closes_and_reopens_a_store(client: TestClient, shop: Merchant) -> None:
    admin = await headers(client, "alice")
    created = await client.post(
        "/api/admin/stores",
        json={"code": "xuhui", "name": "徐汇店", "address": "漕溪北路 1 号"},
        headers=admin,
    )
    assert created.status == 201, await created.text()
    store = await Store.get(code="xuhui")
    assert public(await created.json()) == {
        "id": store.id,
        "code": "xuhui",
        "name": "徐汇店",
        "address": "漕溪北路 1 号",
        "closed_at": None,
    }
    taken = await client.post("/api/admin/stores", json={"code": "xuhui", "name": "又一家"}, headers=admin)
    assert taken.status == 409 and (await taken.json())["error"]["field"] == "code"
    bad = await client.post("/api/admin/stores", json={"code": "徐汇", "name": "x"}, headers=admin)
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "code"
    edited = await client.put(f"/api/admin/stores/{store.id}", json={"name": "徐汇旗舰店"}, headers=admin)
    assert public(await edited.json()) == {
        "id": store.id,
        "code": "xuhui",
        "name": "徐汇旗舰店",
        "address": "",
        "closed_at": None,
    }
    closed = await client.post(f"/api/admin/stores/{store.id}/close", headers=admin)
    assert closed.status == 200 and (await closed.json())["closed_at"] is not None
    listed = await (await client.get("/api/admin/stores", headers=admin)).json()
    assert [(s["code"], s["closed_at"] is None) for s in listed["items"]] == [
        ("main", True),
        ("xuhui", False),
    ]
    reopened = await client.post(f"/api/admin/stores/{store.id}/reopen", headers=admin)
    assert (await reopened.json())["closed_at"] is None
    rows = await AuditLog.filter(action__startswith="store.").order_by("id")
    assert [(r.action, r.subject) for r in rows] == [
        ("store.create", f"store:{store.id}"),
        ("store.update", f"store:{store.id}"),
        ("store.close", f"store:{store.id}"),
        ("store.reopen", f"store:{store.id}"),
    ]
    assert rows[1].detail == {
        "before": {"name": "徐汇店", "address": "漕溪北路 1 号"},
        "after": {"name": "徐汇旗舰店", "address": ""},
    }


async def test_a_store_closes_only_without_active_staff_and_never_the_last_open_one(
    client: TestClient, shop: Merchant
) -> None:
    admin = await headers(client, "alice")
    main = await Store.get(code="main")
    busy = await client.post(f"/api/admin/stores/{main.id}/close", headers=admin)
    assert busy.status == 409
    assert (await busy.json())["error"]["message"] == "门店还有 3 名在职员工，请先调走或停用后再关闭"
    await Staff.filter(username="alice").update(store_id=None)  # an admin needs no store
    await Staff.filter(store_id=main.id).update(active=False)
    last = await client.post(f"/api/admin/stores/{main.id}/close", headers=admin)
    assert (
        last.status == 409 and (await last.json())["error"]["message"] == "这是最后一家营业中的门店，不能关闭"
    )
    assert (await Store.get(id=main.id)).closed_at is None
    assert await AuditLog.filter(action="store.close").count() == 0


async def test_a_manager_sees_only_their_own_store_and_changes_none(
    client: TestClient, shop: Merchant
) -> None:
    other = await stores.create_store(shop.id, "b", stores.StoreInput("B 店"), actor="test")
    mona = await headers(client, "mona")
    main = await Store.get(code="main")
    listed = await (await client.get("/api/admin/stores", headers=mona)).json()
    assert [s["code"] for s in listed["items"]] == ["main"]
    assert (await client.get(f"/api/admin/stores/{main.id}", headers=mona)).status == 200
    assert (await client.get(f"/api/admin/stores/{other.id}", headers=mona)).status == 404
    for method, path, body in (
        ("POST", "/api/admin/stores", {"code": "c", "name": "C 店"}),
        ("PUT", f"/api/admin/stores/{main.id}", {"name": "改名"}),
        ("POST", f"/api/admin/stores/{other.id}/close", None),
    ):
        response = await client.request(method, path, json=body, headers=mona)
        assert response.status == 403, (path, await response.text())
    cashier = await headers(client, "carl")
    assert (await client.get("/api/admin/stores", headers=cashier)).status == 403
    assert [s.name for s in await Store.all().order_by("id")] == ["总店", "B 店"]


async def test_the_scope_helper_limits_managers_to_their_store() -> None:
    admin, manager = Scope(1, None), Scope(1, 7)
    assert (admin.filters(), manager.filters(), manager.filters("s_id")) == ({}, {"store_id": 7}, {"s_id": 7})
    assert admin.where("p.store_id") == ("TRUE", {})
    assert manager.where("p.store_id") == ("p.store_id = :scope_store", {"scope_store": 7})
    assert (
        admin.store_filter(None),
        admin.store_filter(8),
        manager.store_filter(None),
        manager.store_filter(7),
    ) == (
        None,
        8,
        7,
        7,
    )
    with pytest.raises(Forbidden):
        manager.store_filter(8)
    assert (
        admin.allows(None),
        admin.allows(8),
        manager.allows(7),
        manager.allows(8),
        manager.allows(None),
    ) == (
        True,
        True,
        True,
        False,
        False,
    )
    with pytest.raises(NotFound):
        manager.require(8)
    storeless = Staff(id=1, merchant_id=1, store_id=None, role="manager", username="x", password_hash="-")
    with pytest.raises(Forbidden):
        scope_of(storeless)
    assert (
        scope_of(Staff(id=2, merchant_id=1, store_id=None, role="admin", username="y", password_hash="-"))
        == admin
    )


async def test_purchases_pickups_and_top_ups_record_the_acting_staffs_store(
    client: TestClient, shop: Merchant
) -> None:
    await loyalty_config.save_program(shop.id, {}, actor="test")
    b = await stores.create_store(shop.id, "b", stores.StoreInput("B 店"), actor="test")
    await create_staff(shop, store_code="b", username="bella", role="cashier", password=PASSWORD)
    member = await make_member(shop)
    await give(shop, member, 1000)
    item = await make_item(shop)
    order, _ = await catalogue.redeem(
        shop, member, item.id, qty=1, client_key="k1", now=datetime.now(UTC), effects=EFFECTS
    )
    bella = await headers(client, "bella")
    purchase = {"idempotency_key": "p1", "member_id": member.id, "amount_fen": 1000}
    assert (await client.post("/api/staff/purchases", json=purchase, headers=bella)).status == 200
    top_up = {"member_id": member.id, "amount_fen": 500, "payment_method": "cash", "idempotency_key": "t1"}
    assert (await client.post("/api/staff/wallet/top-ups", json=top_up, headers=bella)).status == 200
    verify = {"code": order.pickup_code}
    assert (await client.post("/api/staff/pickups/verify", json=verify, headers=bella)).status == 200
    assert (await Purchase.get(idempotency_key="p1")).store_id == b.id
    assert (await WalletTransaction.get(idempotency_key="topup:t1")).store_id == b.id
    assert (await MallOrder.get(id=order.id)).store_id == b.id
    # An admin without a store records at the merchant's first open store; closed stores are skipped.
    alice = await Staff.get(username="alice")
    await Staff.filter(id=alice.id).update(store_id=None)
    main = await Store.get(code="main")
    await Staff.filter(store_id=main.id).exclude(id=alice.id).update(active=False)
    admin = await headers(client, "alice")
    assert (await client.post(f"/api/admin/stores/{main.id}/close", headers=admin)).status == 200
    assert await activity_store_id(await Staff.get(id=alice.id), shop.id) == b.id
    purchase = {**purchase, "idempotency_key": "p2"}
    assert (await client.post("/api/staff/purchases", json=purchase, headers=admin)).status == 200
    assert (await Purchase.get(idempotency_key="p2")).store_id == b.id
    top_up = {**top_up, "idempotency_key": "t2"}
    assert (await client.post("/api/staff/wallet/top-ups", json=top_up, headers=admin)).status == 200
    assert (await WalletTransaction.get(idempotency_key="topup:t2")).store_id == b.id
