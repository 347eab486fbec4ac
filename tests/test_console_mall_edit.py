"""The console's page of one mall item: its form filled with the current fields, saving through the API's
replace (the kind and the stock stay), the stock changed from the same page; the mall's orders shipped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.mall import catalogue
from models.loyalty import AuditLog
from models.mall import ItemKind, MallItem, MallOrder, OrderStatus
from models.merchant import Merchant
from tests.support.console import login, page_csrf, signed_in_shop
from tests.support.factories import EFFECTS, make_member
from tests.test_mall_orders import give, make_item


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await signed_in_shop(client)


@pytest.fixture
async def cup(shop: Merchant) -> MallItem:
    data = catalogue.ItemInput(
        name="保温杯",
        price_points=500,
        cash_fen=990,
        limit_per_member=2,
        pickup_days=7,
        sale_ends_at=datetime(2027, 1, 31, 16, 0, tzinfo=UTC),  # 2027-02-01 00:00 in Shanghai
    )
    return await catalogue.create_item(shop, ItemKind.PICKUP, data, stock=3, actor="test")


FORM = {
    "name": "保温杯",
    "category": "",
    "price_points": "500",
    "cash_fen": "9.90",
    "pickup_days": "7",
    "limit_per_member": "2",
    "limit_per_day": "",
    "min_tier_rank": "0",
    "sale_starts_at": "",
    "sale_ends_at": "2027-02-01T00:00",
    "image_url": "",
    "sort": "0",
    "description": "",
    "active": "true",
}


async def save(client: TestClient, item: MallItem, token: str | None = None, **fields: str) -> Any:
    token = token if token is not None else await page_csrf(client, f"/admin/mall/items/{item.id}")
    data = {"csrf_token": token, **FORM, **fields}
    return await client.post(f"/admin/mall/items/{item.id}", data=data, allow_redirects=False)


async def test_the_form_shows_the_current_fields(client: TestClient, shop: Merchant, cup: MallItem) -> None:
    assert f'href="/admin/mall/items/{cup.id}"' in await (await client.get("/admin/mall")).text()
    html = await (await client.get(f"/admin/mall/items/{cup.id}")).text()
    assert shop.timezone == "Asia/Shanghai"
    for name in ("name", "price_points", "cash_fen", "pickup_days", "limit_per_member", "sale_ends_at"):
        assert f'name="{name}" value="{FORM[name]}"' in html, name
    assert 'name="limit_per_day" value=""' in html
    assert 'name="active" value="true" checked' in html


async def test_a_valid_edit_changes_the_item_but_not_its_stock(
    client: TestClient, shop: Merchant, cup: MallItem
) -> None:
    response = await save(
        client, cup, name="大号保温杯", price_points="650", cash_fen="", limit_per_member="", sale_ends_at=""
    )
    assert response.status == 303, await response.text()
    item = await MallItem.get(id=cup.id)
    assert (item.name, item.price_points, item.cash_fen, item.limit_per_member, item.sale_ends_at) == (
        "大号保温杯",
        650,
        0,
        None,
        None,
    )
    assert (item.stock, item.kind, item.pickup_days) == (3, ItemKind.PICKUP, 7)
    assert await AuditLog.filter(merchant_id=shop.id, action="mall.item.update", subject=str(cup.id)).exists()
    assert "商品已修改" in await (await client.get(response.headers["Location"])).text()


async def test_an_invalid_edit_keeps_the_input_and_changes_nothing(
    client: TestClient, shop: Merchant, cup: MallItem
) -> None:
    response = await save(client, cup, name="改坏了", price_points="0")
    assert response.status == 400
    html = await response.text()
    assert 'data-field="item.price_points"' in html
    assert 'name="price_points" value="0"' in html and 'name="name" value="改坏了"' in html
    item = await MallItem.get(id=cup.id)
    assert (item.name, item.price_points) == ("保温杯", 500)


async def test_the_stock_changes_from_the_items_page(
    client: TestClient, shop: Merchant, cup: MallItem
) -> None:
    token = await page_csrf(client, f"/admin/mall/items/{cup.id}")
    form = {"csrf_token": token, "delta": "4", "reason": "restock", "key": "item-form-1", "back": "item"}
    done = await client.post(f"/admin/mall/items/{cup.id}/stock", data=form, allow_redirects=False)
    assert done.headers["Location"] == f"/admin/mall/items/{cup.id}?done=stock"
    assert (await MallItem.get(id=cup.id)).stock == 7
    below = {**form, "delta": "-9", "reason": "adjust", "key": "item-form-2"}
    refused = await client.post(f"/admin/mall/items/{cup.id}/stock", data=below)
    assert refused.status == 400
    html = await refused.text()
    assert f'data-field="stock{cup.id}.' in html and 'id="item-edit"' in html
    assert (await MallItem.get(id=cup.id)).stock == 7


async def test_without_the_csrf_token_nothing_changes(
    client: TestClient, shop: Merchant, cup: MallItem
) -> None:
    assert (await save(client, cup, token="", name="偷改")).status == 403
    assert (await MallItem.get(id=cup.id)).name == "保温杯"


async def test_managers_see_the_item_and_its_stock_but_cannot_edit(
    client: TestClient, shop: Merchant, cup: MallItem
) -> None:
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "mona")).status == 303
    html = await (await client.get(f"/admin/mall/items/{cup.id}")).text()
    assert 'id="item-stock"' in html and 'id="item-edit"' not in html
    token = await page_csrf(client, f"/admin/mall/items/{cup.id}")
    assert (await save(client, cup, token=token, name="店长改")).status == 403
    assert (await MallItem.get(id=cup.id)).name == "保温杯"
    assert (await client.get(f"/admin/mall/items/{cup.id + 1000}")).status == 404


# Orders ------------------------------------------------------------------------------------------

ADDRESS = {"name": "李四", "phone": "13900139000", "region": "上海市 徐汇区", "detail": "漕溪北路 1 号"}


async def test_orders_to_ship_are_listed_and_shipped(client: TestClient, shop: Merchant) -> None:
    member = await make_member(shop, "o-ship")
    await give(shop, member, 1_000)
    pillow = await make_item(shop, kind=ItemKind.SHIPPED, name="抱枕")
    order, _ = await catalogue.redeem(
        shop,
        member,
        pillow.id,
        qty=1,
        client_key="s1",
        now=datetime.now(UTC),
        effects=EFFECTS,
        address=ADDRESS,
    )
    assert 'href="/admin/mall/orders?status=to_ship"' in await (await client.get("/admin/mall")).text()
    listed = await (await client.get("/admin/mall/orders?status=to_ship")).text()
    assert f'data-order="{order.id}"' in listed and "抱枕 × 1" in listed and "漕溪北路 1 号" in listed
    assert "没有订单" in await (await client.get("/admin/mall/orders?status=shipped")).text()
    assert (await client.get("/admin/mall/orders?status=nope")).status == 400
    token = await page_csrf(client, "/admin/mall/orders")
    url = f"/admin/mall/orders/{order.id}/ship"
    form = {"csrf_token": token, "order": str(order.id), "carrier": "顺丰", "tracking_no": "SF 123"}
    bad = await client.post(url, data=form)
    assert bad.status == 400
    html = await bad.text()
    assert f'data-field="ship{order.id}.tracking_no"' in html and 'value="SF 123"' in html
    assert (await MallOrder.get(id=order.id)).status == OrderStatus.TO_SHIP
    assert (await client.post(url, data={**form, "csrf_token": "", "tracking_no": "SF123"})).status == 403
    await client.post("/admin/logout", data={"csrf_token": token})
    assert (await login(client, "shop", "mona")).status == 303  # managers ship
    token = await page_csrf(client, "/admin/mall/orders")
    done = await client.post(
        url, data={**form, "csrf_token": token, "tracking_no": "SF123"}, allow_redirects=False
    )
    assert done.status == 303
    shipped = await MallOrder.get(id=order.id)
    assert shipped.status == OrderStatus.SHIPPED and shipped.address["shipment"]["tracking_no"] == "SF123"
    assert await AuditLog.filter(merchant_id=shop.id, action="mall.order.ship").exists()
    after = await (await client.get(done.headers["Location"])).text()
    assert f"订单 {order.id} 已发货" in after
    twice = await client.post(url, data={**form, "csrf_token": token, "tracking_no": "SF123"})
    assert twice.status == 400 and "已发货，不能发货" in await twice.text()  # shown on the order's row


async def test_the_low_stock_threshold_is_set_and_cleared_on_the_items_page(
    client: TestClient, shop: Merchant, cup: MallItem
) -> None:
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "mona")).status == 303  # the API lets managers set it
    page = f"/admin/mall/items/{cup.id}"
    assert 'name="threshold" value=""' in await (await client.get(page)).text()
    token = await page_csrf(client, page)
    url = f"/admin/mall/items/{cup.id}/low-stock"
    bad = await client.post(url, data={"csrf_token": token, "threshold": "-1"})
    assert bad.status == 400
    html = await bad.text()
    assert 'data-field="low.threshold"' in html and 'name="threshold" value="-1"' in html
    assert (await MallItem.get(id=cup.id)).low_stock_threshold is None
    assert (await client.post(url, data={"threshold": "5"})).status == 403
    done = await client.post(url, data={"csrf_token": token, "threshold": "5"}, allow_redirects=False)
    assert done.status == 303
    assert (await MallItem.get(id=cup.id)).low_stock_threshold == 5
    after = await (await client.get(done.headers["Location"])).text()
    assert "库存预警已设置" in after and 'name="threshold" value="5"' in after
    assert await AuditLog.filter(merchant_id=shop.id, action__contains="low_stock").exists()
    await client.post(url, data={"csrf_token": token, "threshold": ""})
    assert (await MallItem.get(id=cup.id)).low_stock_threshold is None
