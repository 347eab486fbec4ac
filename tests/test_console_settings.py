"""Console pages of the programme's settings over HTTP: check-in rewards and stored-value bonus tiers,
notice texts with their live preview, the chat menu, and the mall's items and stock."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from handlers.loyalty import config as loyalty_config
from handlers.mall import catalogue
from handlers.notices import settings as notice_settings
from models.cards import CardProduct, MemberCard
from models.mall import FlashSale, ItemKind, MallItem, StockMovement
from models.merchant import Merchant, ReplyTemplate
from models.product import Product
from tests.support.console import page_csrf, signed_in_shop
from tests.support.factories import make_member


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await signed_in_shop(client)


async def test_stored_value_bonus_tiers_and_check_in_rewards(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/programme/settings")
    tiers = {"bonus_tiers": [{"min_fen": 10_000, "bonus_fen": 2_000}]}
    saved = await client.post(
        "/admin/programme/settings/stored_value",
        data={"csrf_token": token, "document": json.dumps(tiers)},
        allow_redirects=False,
    )
    assert saved.status == 303, await saved.text()
    program = await loyalty_config.program(shop.id)
    assert [(t.min_fen, t.bonus_fen) for t in program.stored_value.bonus_tiers] == [(10_000, 2_000)]
    html = await (await client.get("/admin/programme/settings?saved=stored_value")).text()
    assert 'name="min_0" size="8" value="100.00"' in html and 'name="bonus_0" size="8" value="20.00"' in html
    bad = {
        "daily_points": 5,
        "streak_rewards": {"abc": 1},
        "cycle_days": None,
        "makeup_cost_points": 0,
        "makeup_max_days_back": 0,
        "makeup_max_per_month": 0,
    }
    refused = await client.post(
        "/admin/programme/settings/checkin", data={"csrf_token": token, "document": json.dumps(bad)}
    )
    assert refused.status == 400
    body = await refused.text()
    assert 'data-field="checkin"' in body and "streak_rewards" in body
    assert "&#34;abc&#34;" in body or "&quot;abc&quot;" in body  # what was typed is kept
    good = {**bad, "streak_rewards": {"7": 30}}
    await client.post(
        "/admin/programme/settings/checkin", data={"csrf_token": token, "document": json.dumps(good)}
    )
    program = await loyalty_config.program(shop.id)
    assert (program.checkin.daily_points, dict(program.checkin.streak_rewards)) == (5, {7: 30})
    assert (await loyalty_config.program(shop.id)).stored_value.bonus_tiers  # the other section kept


async def test_a_notice_text_previews_live_and_saves(client: TestClient, shop: Merchant) -> None:
    html = await (await client.get("/admin/programme/notices")).text()
    assert "消费小票" in html and 'hx-post="/admin/programme/notices/purchase_receipt/preview"' in html
    token = await page_csrf(client, "/admin/programme/notices")
    headers = {"X-CSRF-Token": token, "HX-Request": "true"}
    shown = await client.post(
        "/admin/programme/notices/purchase_receipt/preview",
        data={"body": "{{ member_name }}，感谢光临{{ merchant_name }}", "template_fields": ""},
        headers=headers,
    )
    assert shown.status == 200
    assert '<div class="bubble" data-preview="body">张三，感谢光临街角咖啡</div>' in await shown.text()
    wrong = await client.post(
        "/admin/programme/notices/purchase_receipt/preview",
        data={"body": "{{ no_such_thing }}", "template_fields": ""},
        headers=headers,
    )
    assert 'data-field="preview-body"' in await wrong.text()
    refused = await client.post(
        "/admin/programme/notices/purchase_receipt",
        data={
            "csrf_token": token,
            "enabled": "true",
            "channel_custom": "true",
            "body": "{{ no_such_thing }}",
        },
    )
    assert refused.status == 400
    assert "{{ no_such_thing }}" in await refused.text()
    saved = await client.post(
        "/admin/programme/notices/purchase_receipt",
        data={
            "csrf_token": token,
            "enabled": "true",
            "channel_custom": "true",
            "body": "谢谢{{ member_name }}",
        },
        allow_redirects=False,
    )
    assert saved.status == 303, await saved.text()
    setting = await notice_settings.setting(shop.id, "purchase_receipt")
    assert (setting.as_dict()["body"], setting.as_dict()["channels"]) == ("谢谢{{ member_name }}", ["custom"])


async def test_a_menu_that_breaks_wechat_limits_is_named_and_not_sent(
    client: TestClient, shop: Merchant
) -> None:
    html = await (await client.get("/admin/programme/menu")).text()
    assert "会员卡" in html  # the default menu, never pushed yet
    token = await page_csrf(client, "/admin/programme/menu")
    four = {"button": [{"name": f"按钮{i}", "type": "click", "key": "MENU_HELP"} for i in range(4)]}
    refused = await client.post(
        "/admin/programme/menu", data={"csrf_token": token, "document": json.dumps(four)}
    )
    assert refused.status == 400
    assert "button" in await refused.text()


async def test_mall_items_created_and_restocked_once_per_form(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/mall")
    bad = await client.post(
        "/admin/mall/items",
        data={
            "csrf_token": token,
            "kind": "pickup",
            "name": "保温杯",
            "price_points": "abc",
            "active": "true",
        },
    )
    assert bad.status == 400
    text = await bad.text()
    assert 'data-field="item.price_points"' in text and 'name="name" value="保温杯"' in text
    made = await client.post(
        "/admin/mall/items",
        data={
            "csrf_token": token,
            "kind": "pickup",
            "name": "保温杯",
            "price_points": "500",
            "cash_fen": "9.9",
            "stock": "3",
            "active": "true",
        },
        allow_redirects=False,
    )
    assert made.status == 303, await made.text()
    item = await MallItem.get(merchant_id=shop.id)
    assert (item.price_points, item.cash_fen, item.stock) == (500, 990, 3)
    form = {"csrf_token": token, "delta": "5", "reason": "restock", "key": "form-1"}
    for _ in range(2):
        assert (
            await client.post(f"/admin/mall/items/{item.id}/stock", data=form, allow_redirects=False)
        ).status == 303
    assert (await MallItem.get(id=item.id)).stock == 8
    assert await StockMovement.filter(item_id=item.id).count() == 2  # the initial stock and one restock
    too_many = await client.post(
        f"/admin/mall/items/{item.id}/stock",
        data={"csrf_token": token, "delta": "-9", "reason": "adjust", "key": "form-2"},
    )
    assert too_many.status == 400
    assert f'data-field="stock{item.id}.' in await too_many.text()


async def test_a_chat_reply_previews_saves_and_resets(client: TestClient, shop: Merchant) -> None:
    html = await (await client.get("/admin/programme/replies")).text()
    assert 'id="reply-help"' in html
    token = await page_csrf(client, "/admin/programme/replies")
    headers = {"X-CSRF-Token": token, "HX-Request": "true"}
    shown = await client.post(
        "/admin/programme/replies/help/preview",
        data={"source": "欢迎光临{{ merchant_name }}"},
        headers=headers,
    )
    assert '<div class="bubble" data-preview="reply">欢迎光临shop 门店</div>' in await shown.text()
    wrong = await client.post(
        "/admin/programme/replies/help/preview", data={"source": "{{ nobody }}"}, headers=headers
    )
    assert 'data-field="preview"' in await wrong.text()
    refused = await client.post(
        "/admin/programme/replies/help", data={"csrf_token": token, "source": "{{ nobody }}"}
    )
    assert refused.status == 400 and 'data-field="help"' in await refused.text()
    saved = await client.post(
        "/admin/programme/replies/help",
        data={"csrf_token": token, "source": "欢迎光临{{ merchant_name }}"},
        allow_redirects=False,
    )
    assert saved.status == 303
    assert await ReplyTemplate.filter(merchant_id=shop.id, name="help").exists()
    await client.post("/admin/programme/replies/help", data={"csrf_token": token, "reset": "true"})
    assert not await ReplyTemplate.filter(merchant_id=shop.id, name="help").exists()


async def test_flash_sale_and_group_deal_from_the_mall_page(client: TestClient, shop: Merchant) -> None:
    data = catalogue.ItemInput(name="雨伞", price_points=800)
    item = await catalogue.create_item(shop, ItemKind.PICKUP, data, stock=10, actor="test")
    token = await page_csrf(client, "/admin/mall")
    sale = {
        "csrf_token": token,
        "item_id": str(item.id),
        "price_points": "300",
        "stock": "4",
        "limit_per_member": "1",
        "starts_at": "2030-01-01T10:00",
        "ends_at": "2030-01-01T12:00",
    }
    too_many = await client.post("/admin/mall/flash-sales", data={**sale, "stock": "40"})
    assert too_many.status == 400
    body = await too_many.text()
    assert 'data-field="sale.' in body and 'name="stock" value="40"' in body
    made = await client.post("/admin/mall/flash-sales", data=sale, allow_redirects=False)
    assert made.status == 303, await made.text()
    flash_sale = await FlashSale.get(item_id=item.id)
    assert (flash_sale.stock, flash_sale.price_points) == (4, 300)
    assert flash_sale.starts_at == datetime(2030, 1, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
    assert (await MallItem.get(id=item.id)).stock == 6
    deal = {**sale, "group_size": "3", "hours": "24"}
    del deal["stock"], deal["limit_per_member"]
    assert (await client.post("/admin/mall/group-deals", data=deal, allow_redirects=False)).status == 303
    html = await (await client.get("/admin/mall?done=deal")).text()
    assert "拼团活动已创建" in html and "3 人 / 24 小时" in html and "0/4" in html


async def test_a_card_product_created_and_granted_once_per_form(client: TestClient, shop: Merchant) -> None:
    member = await make_member(shop, "o-card", name="卡友")
    token = await page_csrf(client, "/admin/cards")
    product = {
        "csrf_token": token,
        "kind": "count",
        "name": "洗剪吹 10 次卡",
        "service": "洗剪吹",
        "uses": "10",
        "valid_days": "365",
        "price": "298",
        "active": "true",
    }
    bad = await client.post("/admin/cards/products", data={**product, "valid_days": "0"})
    assert bad.status == 400
    text = await bad.text()
    assert 'data-field="product.valid_days"' in text and 'value="洗剪吹 10 次卡"' in text
    made = await client.post("/admin/cards/products", data=product, allow_redirects=False)
    assert made.status == 303, await made.text()
    card_product = await CardProduct.get(merchant_id=shop.id)
    assert (card_product.uses, card_product.price_fen) == (10, 29_800)
    grant = {
        "csrf_token": token,
        "member_code": member.code,
        "product_id": str(card_product.id),
        "reason": "老客户回馈",
        "key": "g1",
    }
    first = await client.post("/admin/cards/grant", data=grant)
    assert "已赠送「洗剪吹 10 次卡」" in await first.text()
    again = await client.post("/admin/cards/grant", data=grant)
    assert "未重复" in await again.text()
    assert await MemberCard.filter(member_id=member.id).count() == 1
    unknown = await client.post("/admin/cards/grant", data={**grant, "key": "g2", "member_code": "NOPE0000"})
    assert unknown.status == 400 and 'data-field="grant.' in await unknown.text()


async def test_products_added_and_imported_after_a_dry_run(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/products")
    bad = await client.post(
        "/admin/products",
        data={"csrf_token": token, "sku": "A 1", "name": "拿铁", "price": "28", "active": "true"},
    )
    assert bad.status == 400 and 'data-field="product.sku"' in await bad.text()
    made = await client.post(
        "/admin/products",
        data={
            "csrf_token": token,
            "sku": "LATTE",
            "name": "拿铁",
            "price": "28",
            "cost": "7.5",
            "active": "true",
        },
        allow_redirects=False,
    )
    assert made.status == 303, await made.text()
    latte = await Product.get(merchant_id=shop.id, sku="LATTE")
    assert (latte.price_fen, latte.cost_fen) == (2_800, 750)

    def upload(content: str, dry_run: bool) -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("file", content.encode(), filename="商品.csv", content_type="text/csv")
        if dry_run:
            data.add_field("dry_run", "true")
        return data

    broken = "sku,名称,售价\nMOCHA,摩卡,abc\n"
    refused = await client.post(f"/admin/products/import?csrf_token={token}", data=upload(broken, False))
    assert 'data-applied="false"' in await refused.text() and not await Product.exists(sku="MOCHA")
    good = "sku,名称,售价\nMOCHA,摩卡,30\nLATTE,拿铁,28\n"
    dry = await (
        await client.post(f"/admin/products/import?csrf_token={token}", data=upload(good, True))
    ).text()
    assert "试运行结果" in dry and 'data-count="created">1<' in dry and not await Product.exists(sku="MOCHA")
    real = await (
        await client.post(f"/admin/products/import?csrf_token={token}", data=upload(good, False))
    ).text()
    assert "导入完成" in real and (await Product.get(sku="MOCHA")).price_fen == 3_000
    assert (await client.post("/admin/products/import", data=upload(good, False))).status == 403  # no token


async def test_an_item_is_taken_off_sale_and_back(client: TestClient, shop: Merchant) -> None:
    item = await catalogue.create_item(
        shop,
        ItemKind.PICKUP,
        catalogue.ItemInput(name="帽子", price_points=90, cash_fen=500),
        stock=2,
        actor="t",
    )
    token = await page_csrf(client, "/admin/mall")
    off = await client.post(
        f"/admin/mall/items/{item.id}/active",
        data={"csrf_token": token, "active": "false"},
        allow_redirects=False,
    )
    assert off.status == 303, await off.text()
    stored = await MallItem.get(id=item.id)
    assert (stored.active, stored.price_points, stored.cash_fen, stored.stock) == (False, 90, 500, 2)
    await client.post(f"/admin/mall/items/{item.id}/active", data={"csrf_token": token, "active": "true"})
    assert (await MallItem.get(id=item.id)).active


async def test_bonus_tiers_and_check_in_rewards_from_their_forms(client: TestClient, shop: Merchant) -> None:
    html = await (await client.get("/admin/programme/settings")).text()
    assert 'id="bonus-form"' in html and 'id="checkin-form"' in html
    token = await page_csrf(client, "/admin/programme/settings")
    tiers = {"csrf_token": token, "min_0": "100", "bonus_0": "20", "min_1": "500", "bonus_1": "120.5"}
    saved = await client.post(
        "/admin/programme/settings/stored_value/tiers", data=tiers, allow_redirects=False
    )
    assert saved.status == 303, await saved.text()
    program = await loyalty_config.program(shop.id)
    assert [(t.min_fen, t.bonus_fen) for t in program.stored_value.bonus_tiers] == [
        (10_000, 2_000),
        (50_000, 12_050),
    ]
    wrong = await client.post(
        "/admin/programme/settings/stored_value/tiers", data={**tiers, "bonus_1": "1,000"}
    )
    assert wrong.status == 400
    text = await wrong.text()
    assert 'data-field="stored_value"' in text and 'value="1,000"' in text
    checkin = {
        "csrf_token": token,
        "daily_points": "5",
        "streak_day_0": "7",
        "streak_points_0": "30",
        "streak_day_1": "30",
        "streak_points_1": "200",
        "cycle_days": "30",
        "makeup_cost_points": "10",
        "makeup_max_days_back": "3",
        "makeup_max_per_month": "2",
    }
    done = await client.post("/admin/programme/settings/checkin/form", data=checkin, allow_redirects=False)
    assert done.status == 303, await done.text()
    policy = (await loyalty_config.program(shop.id)).checkin
    assert (policy.daily_points, dict(policy.streak_rewards), policy.cycle_days) == (5, {7: 30, 30: 200}, 30)
    assert (policy.makeup_cost_points, policy.makeup_max_days_back, policy.makeup_max_per_month) == (10, 3, 2)
    html = await (await client.get("/admin/programme/settings")).text()
    assert 'name="streak_day_1" size="4" value="30"' in html
