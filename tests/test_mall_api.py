"""The mall over HTTP: the member's catalogue, redemption, orders and cancel; the staff pick-up desk;
shipping from the admin API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from handlers.loyalty.ledger_audit import audit_points
from handlers.mall.orders import expire_pickups
from models.mall import ItemKind, MallItem, MallOrder, OrderStatus
from models.member import Member
from models.merchant import Merchant
from tests.support.factories import make_member, make_merchant, staff_headers
from tests.test_mall_orders import balance, give, make_item
from tests.test_mp_loyalty import login

ADDRESS = {"name": "李四", "phone": "13900139000", "region": "上海市 徐汇区", "detail": "漕溪北路 1 号"}


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await make_merchant()


@pytest.fixture
async def member(shop: Merchant) -> Member:
    member = await make_member(shop)
    await give(shop, member, 1000)
    return member


@pytest.fixture
async def auth(client: TestClient, shop: Merchant, member: Member) -> dict[str, str]:
    return await login(client, shop, member)


async def redeem(
    client: TestClient, auth: dict[str, str], item: MallItem, key: str = "k1", **body: Any
) -> Any:
    body = {"item_id": item.id, "idempotency_key": key, **body}
    return await client.post("/api/mp/shop/mall/redeem", json=body, headers=auth)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "items"),
        ("GET", "items/1"),
        ("POST", "redeem"),
        ("GET", "orders"),
        ("GET", "orders/1"),
        ("POST", "orders/1/cancel"),
    ],
)
async def test_member_endpoints_need_the_members_own_merchant_session(
    client: TestClient, shop: Merchant, method: str, path: str
) -> None:
    url = f"/api/mp/shop/mall/{path}"
    assert (await client.request(method, url, json={})).status == 401
    other = await make_merchant("other")
    stranger = await make_member(other, openid="o-stranger")
    headers = await login(client, other, stranger)
    assert (await client.request(method, url, json={}, headers=headers)).status == 401


async def test_catalogue_shows_items_on_sale_with_eligibility_and_limits(
    client: TestClient, shop: Merchant, auth: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    cup = await make_item(shop, name="杯子", sort=2, limit_per_member=2)
    await make_item(shop, name="金卡礼", sort=1, min_tier_rank=2)
    await make_item(shop, name="未开始", sale_starts_at=now + timedelta(days=1))
    await make_item(shop, name="已下架", active=False)
    assert (await redeem(client, auth, cup)).status == 200
    body = await (await client.get("/api/mp/shop/mall/items", headers=auth)).json()
    assert [(i["name"], i["eligible"], i["remaining_limit"]) for i in body["items"]] == [
        ("金卡礼", False, None),
        ("杯子", True, 1),
    ]
    assert body["items"][1]["stock"] == 9
    one = await (await client.get(f"/api/mp/shop/mall/items/{cup.id}", headers=auth)).json()
    assert (one["on_sale"], one["remaining_limit"]) == (True, 1)
    hidden = await MallItem.get(name="已下架")
    assert (await client.get(f"/api/mp/shop/mall/items/{hidden.id}", headers=auth)).status == 404


async def test_redeem_replay_and_refusals(
    client: TestClient, shop: Merchant, member: Member, auth: dict[str, str]
) -> None:
    item = await make_item(shop, stock=2, price_points=400)
    first = await redeem(client, auth, item, qty=2)
    assert first.status == 200, await first.text()
    order = await first.json()
    assert (order["status"], order["status_label"], order["points"], order["replayed"]) == (
        "awaiting_pickup",
        "待提货",
        800,
        False,
    )
    assert len(order["pickup_code"]) == 8 and order["can_cancel"]
    again = await (await redeem(client, auth, item, qty=2)).json()
    assert (again["id"], again["replayed"]) == (order["id"], True)
    mismatch = await redeem(client, auth, item, qty=1)
    assert mismatch.status == 409 and (await mismatch.json())["error"]["code"] == "idempotency_mismatch"
    sold_out = await (await redeem(client, auth, item, key="k2")).json()
    assert sold_out["error"] == {"code": "conflict", "message": "库存不足", "field": "stock"}
    pricey = await make_item(shop, price_points=5000)
    short = await redeem(client, auth, pricey, key="k3")
    assert short.status == 409 and (await short.json())["error"]["code"] == "insufficient_points"
    assert (await redeem(client, auth, pricey, key="k4", qty=0)).status == 400
    assert (await redeem(client, auth, pricey, key="k5", address=ADDRESS)).status == 400
    assert (
        await client.post(
            "/api/mp/shop/mall/redeem", json={"item_id": 999, "idempotency_key": "x"}, headers=auth
        )
    ).status == 404
    assert await balance(member) == 200 and await MallOrder.all().count() == 1
    assert await audit_points() == []


async def test_orders_newest_first_and_only_open_orders_show_a_code(
    client: TestClient, shop: Merchant, member: Member, auth: dict[str, str]
) -> None:
    item = await make_item(shop)
    ids = [(await (await redeem(client, auth, item, key=f"k{i}")).json())["id"] for i in range(3)]
    cancel = await client.post(f"/api/mp/shop/mall/orders/{ids[0]}/cancel", headers=auth)
    assert cancel.status == 200 and (await cancel.json())["status"] == "cancelled"
    again = await client.post(f"/api/mp/shop/mall/orders/{ids[0]}/cancel", headers=auth)
    assert again.status == 409 and "已取消" in (await again.json())["error"]["message"]
    page = await (await client.get("/api/mp/shop/mall/orders?limit=2", headers=auth)).json()
    assert [o["id"] for o in page["items"]] == [ids[2], ids[1]] and page["next_cursor"] == ids[1]
    rest = await (await client.get(f"/api/mp/shop/mall/orders?cursor={ids[1]}", headers=auth)).json()
    assert [(o["id"], o["pickup_code"], o["can_cancel"]) for o in rest["items"]] == [(ids[0], None, False)]
    assert rest["next_cursor"] is None
    assert (await client.get("/api/mp/shop/mall/orders?limit=0", headers=auth)).status == 400
    other = await make_member(shop, openid="o-other")
    theirs = await login(client, shop, other)
    assert (await client.get(f"/api/mp/shop/mall/orders/{ids[1]}", headers=theirs)).status == 404
    assert (await client.post(f"/api/mp/shop/mall/orders/{ids[1]}/cancel", headers=theirs)).status == 404
    assert await balance(member) == 800 and (await MallItem.get(id=item.id)).stock == 8
    assert await audit_points() == []


async def test_pickup_is_verified_once_and_a_second_try_names_who_and_when(
    client: TestClient, shop: Merchant, auth: dict[str, str]
) -> None:
    item = await make_item(shop, cash_fen=1500, name="面包券")
    order = await (await redeem(client, auth, item)).json()
    cashier = await staff_headers(client, shop, "cashier", username="wang.desk")
    code = order["pickup_code"]
    done = await client.post("/api/staff/pickups/verify", json={"code": code.lower()}, headers=cashier)
    assert done.status == 200, await done.text()
    body = await done.json()
    assert (body["order_id"], body["cash_fen"], body["qty"]) == (order["id"], 1500, 1)
    assert "15.00 元" in body["message"]
    verified = await MallOrder.get(id=order["id"])
    assert (verified.status, verified.open_pickup_code, verified.pickup_code) == (
        OrderStatus.FULFILLED,
        None,
        code,
    )
    again = await client.post("/api/staff/pickups/verify", json={"code": code}, headers=cashier)
    assert again.status == 409
    assert verified.verified_at is not None
    when = verified.verified_at.astimezone(ZoneInfo(shop.timezone)).strftime("%Y-%m-%d %H:%M")
    message = (await again.json())["error"]["message"]
    assert "wang.desk" in message and when in message
    mine = await (await client.get(f"/api/mp/shop/mall/orders/{order['id']}", headers=auth)).json()
    assert (mine["status"], mine["pickup_code"]) == ("fulfilled", None)
    assert (
        await client.post("/api/staff/pickups/verify", json={"code": "ZZZZZZZZ"}, headers=cashier)
    ).status == 404
    other = await make_merchant("other")
    stranger = await staff_headers(client, other, "cashier", username="stranger")
    verify = "/api/staff/pickups/verify"
    assert (await client.post(verify, json={"code": code}, headers=stranger)).status == 404
    assert (await client.post("/api/staff/pickups/verify", json={"code": code})).status == 401


async def test_expired_and_cancelled_codes_are_refused_with_the_reason(
    client: TestClient, shop: Merchant, auth: dict[str, str]
) -> None:
    item = await make_item(shop)
    cashier = await staff_headers(client, shop, "cashier")
    late = await (await redeem(client, auth, item, key="late")).json()
    await MallOrder.filter(id=late["id"]).update(pickup_deadline=datetime.now(UTC) - timedelta(minutes=1))
    verify = "/api/staff/pickups/verify"
    refused = await client.post(verify, json={"code": late["pickup_code"]}, headers=cashier)
    assert refused.status == 409 and "已过期" in (await refused.json())["error"]["message"]
    assert await expire_pickups(datetime.now(UTC)) == {"expired_orders": 1}
    expired = await client.post(verify, json={"code": late["pickup_code"]}, headers=cashier)
    assert expired.status == 409 and "已退回" in (await expired.json())["error"]["message"]
    cancelled = await (await redeem(client, auth, item, key="gone")).json()
    await client.post(f"/api/mp/shop/mall/orders/{cancelled['id']}/cancel", headers=auth)
    response = await client.post(
        "/api/staff/pickups/verify", json={"code": cancelled["pickup_code"]}, headers=cashier
    )
    assert response.status == 409 and "已取消" in (await response.json())["error"]["message"]
    assert (await MallItem.get(id=item.id)).stock == 10
    assert await audit_points() == []


async def test_shipped_flow(client: TestClient, shop: Merchant, auth: dict[str, str]) -> None:
    item = await make_item(shop, kind=ItemKind.SHIPPED, name="抱枕")
    missing = await redeem(client, auth, item)
    assert missing.status == 400 and (await missing.json())["error"]["field"] == "address"
    order = await (await redeem(client, auth, item, key="ship", address=ADDRESS)).json()
    assert (order["status"], order["pickup_code"]) == ("to_ship", None)
    assert order["address"]["phone"] == "13900139000"
    manager = await staff_headers(client, shop, "manager")
    listed = await (await client.get("/api/admin/mall/orders?status=to_ship", headers=manager)).json()
    assert [o["id"] for o in listed["items"]] == [order["id"]]
    assert (await client.get("/api/admin/mall/orders?status=nope", headers=manager)).status == 400
    url = f"/api/admin/mall/orders/{order['id']}/ship"
    shipped = await client.post(url, json={"carrier": "顺丰", "tracking_no": "SF1234567890"}, headers=manager)
    assert shipped.status == 200 and (await shipped.json())["status"] == "shipped"
    twice = await client.post(url, json={"carrier": "顺丰", "tracking_no": "SF1234567890"}, headers=manager)
    assert twice.status == 409
    mine = await (await client.get(f"/api/mp/shop/mall/orders/{order['id']}", headers=auth)).json()
    assert mine["address"]["shipment"]["tracking_no"] == "SF1234567890" and not mine["can_cancel"]
    late_cancel = await client.post(f"/api/mp/shop/mall/orders/{order['id']}/cancel", headers=auth)
    assert late_cancel.status == 409 and "已发货" in (await late_cancel.json())["error"]["message"]
    cashier = await staff_headers(client, shop, "cashier")
    ship = {"carrier": "顺丰", "tracking_no": "SF99999"}
    assert (await client.post(url, json=ship, headers=cashier)).status == 403


async def test_concurrent_verifies_of_one_code_succeed_once(
    client: TestClient, shop: Merchant, auth: dict[str, str]
) -> None:
    item = await make_item(shop)
    order = await (await redeem(client, auth, item)).json()
    desks = [await staff_headers(client, shop, "cashier", username=f"desk{i}") for i in range(8)]
    responses = await asyncio.gather(
        *(
            client.post("/api/staff/pickups/verify", json={"code": order["pickup_code"]}, headers=desk)
            for desk in desks
        )
    )
    assert sorted(r.status for r in responses) == [200] + [409] * 7
    assert (await MallOrder.get(id=order["id"])).status == OrderStatus.FULFILLED


async def test_a_client_key_cannot_borrow_the_system_separator(
    client: TestClient, shop: Merchant, member: Member, auth: dict[str, str]
) -> None:
    item = await make_item(shop)
    response = await redeem(client, auth, item, key="k1:return")  # would collide with k1's return key
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "idempotency_key"
