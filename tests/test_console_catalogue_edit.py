"""The console's edit pages of the service-card products and the product catalogue, and voiding a
member's coupon or service card from the member's page: forms filled with the current values, the API's
replace or delete behind each, refusals next to the field with the input kept."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.products import catalogue as products
from handlers.wallet import service_cards
from models.cards import CardKind, CardProduct, MemberCard
from models.coupon import Coupon, CouponStatus, CouponTemplate
from models.loyalty import AuditLog
from models.member import Member
from models.merchant import Merchant
from models.product import Product
from tests.support.console import login, make_staff, page_csrf
from tests.support.factories import make_member, make_merchant


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    await make_member(merchant, "o-1", name="张三", phone="13800000001")
    assert (await login(client, "shop", "alice")).status == 303
    return merchant


async def as_manager(client: TestClient) -> None:
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "mona")).status == 303


# Service-card products ---------------------------------------------------------------------------


@pytest.fixture
async def haircut(shop: Merchant) -> CardProduct:
    data = service_cards.ProductInput(CardKind.COUNT, "洗剪吹 10 次卡", "洗剪吹", 10, 365, 29_800, True)
    return await service_cards.create_product(shop, data, actor="test")


CARD = {"name": "洗剪吹 10 次卡", "service": "洗剪吹", "uses": "10", "valid_days": "365", "price": "298.00"}


async def save_card(client: TestClient, p: CardProduct, token: str | None = None, **fields: str) -> Any:
    token = token if token is not None else await page_csrf(client, f"/admin/cards/products/{p.id}")
    data = {"csrf_token": token, **CARD, "active": "true", **fields}
    return await client.post(f"/admin/cards/products/{p.id}", data=data, allow_redirects=False)


async def test_a_card_product_is_edited_from_its_filled_form(
    client: TestClient, shop: Merchant, haircut: CardProduct
) -> None:
    assert f'href="/admin/cards/products/{haircut.id}"' in await (await client.get("/admin/cards")).text()
    html = await (await client.get(f"/admin/cards/products/{haircut.id}")).text()
    for name, value in CARD.items():
        assert f'name="{name}" value="{value}"' in html, name
    saved = await save_card(client, haircut, name="洗剪吹 12 次卡", uses="12", price="328")
    assert saved.status == 303, await saved.text()
    await haircut.refresh_from_db()
    assert (haircut.name, haircut.uses, haircut.price_fen, haircut.kind) == (
        "洗剪吹 12 次卡",
        12,
        32_800,
        "count",
    )
    assert await AuditLog.filter(merchant_id=shop.id, action="service_card_product.update").exists()
    assert "卡种已修改" in await (await client.get(saved.headers["Location"])).text()


async def test_a_refused_card_product_edit_keeps_the_input(
    client: TestClient, shop: Merchant, haircut: CardProduct
) -> None:
    refused = await save_card(client, haircut, name="改坏了", valid_days="0")
    assert refused.status == 400
    html = await refused.text()
    assert 'data-field="product.valid_days"' in html and 'name="name" value="改坏了"' in html
    assert 'name="valid_days" value="0"' in html
    await haircut.refresh_from_db()
    assert (haircut.name, haircut.valid_days) == ("洗剪吹 10 次卡", 365)
    assert (await save_card(client, haircut, token="", name="偷改")).status == 403


async def test_deleting_a_card_product_takes_it_off_sale_after_a_confirmation(
    client: TestClient, shop: Merchant, haircut: CardProduct
) -> None:
    html = await (await client.get(f"/admin/cards/products/{haircut.id}")).text()
    assert 'id="card-product-delete"' in html and 'data-confirm="确定删除（停售）卡种' in html
    deleted = await client.post(
        f"/admin/cards/products/{haircut.id}/delete",
        data={"csrf_token": await page_csrf(client)},
        allow_redirects=False,
    )
    assert deleted.status == 303
    await haircut.refresh_from_db()
    assert haircut.active is False  # kept: issued cards refer to it
    assert "停售" in await (await client.get(deleted.headers["Location"])).text()


async def test_managers_cannot_edit_card_products(
    client: TestClient, shop: Merchant, haircut: CardProduct
) -> None:
    await as_manager(client)
    assert (await client.get(f"/admin/cards/products/{haircut.id}")).status == 403
    token = await page_csrf(client, "/admin/cards")
    assert (await save_card(client, haircut, token=token, name="店长改")).status == 403
    gone = await client.post(f"/admin/cards/products/{haircut.id}/delete", data={"csrf_token": token})
    assert gone.status == 403
    await haircut.refresh_from_db()
    assert (haircut.name, haircut.active) == ("洗剪吹 10 次卡", True)


# Products ----------------------------------------------------------------------------------------


@pytest.fixture
async def latte(shop: Merchant) -> Product:
    data = products.ProductInput(name="拿铁", price_fen=2_800, category="咖啡", cost_fen=750)
    return await products.create_product(shop.id, "LATTE", data, actor="test")


async def save_product(client: TestClient, p: Product, token: str | None = None, **fields: str) -> Any:
    token = token if token is not None else await page_csrf(client, f"/admin/products/{p.id}")
    data = {"csrf_token": token, "name": "拿铁", "category": "咖啡", "price": "28.00", "cost": "7.50"}
    return await client.post(
        f"/admin/products/{p.id}", data={**data, "active": "true", **fields}, allow_redirects=False
    )


async def test_a_product_is_edited_from_its_filled_form(
    client: TestClient, shop: Merchant, latte: Product
) -> None:
    assert f'href="/admin/products/{latte.id}"' in await (await client.get("/admin/products")).text()
    html = await (await client.get(f"/admin/products/{latte.id}")).text()
    for name, value in {"name": "拿铁", "category": "咖啡", "price": "28.00", "cost": "7.50"}.items():
        assert f'name="{name}" value="{value}"' in html, name
    saved = await save_product(client, latte, name="燕麦拿铁", price="32", cost="", active="")
    assert saved.status == 303, await saved.text()
    await latte.refresh_from_db()
    assert (latte.sku, latte.name, latte.price_fen, latte.cost_fen, latte.active) == (
        "LATTE",
        "燕麦拿铁",
        3_200,
        None,
        False,
    )
    assert await AuditLog.filter(merchant_id=shop.id, action__startswith="product.").count() >= 2
    assert "商品已修改" in await (await client.get(saved.headers["Location"])).text()


async def test_a_refused_product_edit_keeps_the_input(
    client: TestClient, shop: Merchant, latte: Product
) -> None:
    refused = await save_product(client, latte, name="改坏了", price="abc")
    assert refused.status == 400
    html = await refused.text()
    assert 'data-field="product.price_fen"' in html and 'name="price" value="abc"' in html
    assert 'name="name" value="改坏了"' in html
    await latte.refresh_from_db()
    assert (latte.name, latte.price_fen) == ("拿铁", 2_800)
    assert (await save_product(client, latte, token="", name="偷改")).status == 403


async def test_a_product_is_deleted_after_a_confirmation(
    client: TestClient, shop: Merchant, latte: Product
) -> None:
    html = await (await client.get(f"/admin/products/{latte.id}")).text()
    assert 'data-confirm="确定删除商品「拿铁」' in html
    assert (await client.post(f"/admin/products/{latte.id}/delete", data={})).status == 403
    assert await Product.exists(id=latte.id)
    deleted = await client.post(
        f"/admin/products/{latte.id}/delete",
        data={"csrf_token": await page_csrf(client)},
        allow_redirects=False,
    )
    assert deleted.status == 303
    assert not await Product.exists(id=latte.id)
    assert await AuditLog.filter(merchant_id=shop.id, action="product.delete").exists()
    assert "商品已删除" in await (await client.get(deleted.headers["Location"])).text()


async def test_managers_cannot_edit_products(client: TestClient, shop: Merchant, latte: Product) -> None:
    await as_manager(client)
    assert (await client.get(f"/admin/products/{latte.id}")).status == 403
    token = await page_csrf(client, "/admin/products")
    assert (await save_product(client, latte, token=token, name="店长改")).status == 403
    assert (await client.post(f"/admin/products/{latte.id}/delete", data={"csrf_token": token})).status == 403
    await latte.refresh_from_db()
    assert latte.name == "拿铁"


# Voiding a member's card or coupon ---------------------------------------------------------------


async def granted_card(client: TestClient, member: Member, product: CardProduct) -> MemberCard:
    grant = {
        "csrf_token": await page_csrf(client, "/admin/cards"),
        "member_code": member.code,
        "product_id": str(product.id),
        "reason": "老客户回馈",
        "key": "g1",
    }
    assert (await client.post("/admin/cards/grant", data=grant)).status == 200
    return await MemberCard.get(member_id=member.id)


async def test_a_manager_voids_a_members_card_with_a_reason(
    client: TestClient, shop: Merchant, haircut: CardProduct
) -> None:
    zhang = await Member.get(name="张三")
    card = await granted_card(client, zhang, haircut)
    await as_manager(client)
    page = f"/admin/members/{zhang.id}"
    html = await (await client.get(page)).text()
    action = f"/admin/members/{zhang.id}/cards/{card.id}/revoke"
    assert f'action="{action}"' in html and 'data-confirm="确定作废「洗剪吹 10 次卡」' in html
    token = await page_csrf(client, page)
    assert (await client.post(action, data={"reason": "误发"})).status == 403
    empty = await client.post(action, data={"csrf_token": token, "card": str(card.id), "reason": " "})
    assert empty.status == 400 and 'data-field="card.reason"' in await empty.text()
    await card.refresh_from_db()
    assert card.revoked_at is None
    done = await client.post(
        action, data={"csrf_token": token, "card": str(card.id), "reason": "误发"}, allow_redirects=False
    )
    assert done.status == 303
    await card.refresh_from_db()
    assert card.revoked_at is not None
    assert await AuditLog.filter(merchant_id=shop.id, action="service_card.revoke").exists()
    after = await (await client.get(done.headers["Location"])).text()
    assert "服务卡已作废" in after and f'action="{action}"' not in after


async def test_a_manager_voids_a_members_coupon_with_a_reason(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/coupons")
    template = {"csrf_token": token, "name": "满100减20", "kind": "fixed", "threshold_fen": "100"}
    template |= {"amount_off_fen": "20", "valid_days": "30", "active": "true"}
    assert (await client.post("/admin/coupons/templates", data=template, allow_redirects=False)).status == 303
    zhang = await Member.get(name="张三")
    t = await CouponTemplate.get(merchant_id=shop.id)
    issue = {
        "csrf_token": token,
        "member_code": zhang.code,
        "template_id": str(t.id),
        "reason": "补偿",
        "key": "c1",
    }
    assert (await client.post("/admin/coupons/issue", data=issue)).status == 200
    coupon = await Coupon.get(member_id=zhang.id)
    await as_manager(client)
    page = f"/admin/members/{zhang.id}"
    action = f"/admin/members/{zhang.id}/coupons/{coupon.id}/revoke"
    assert f'action="{action}"' in await (await client.get(page)).text()
    token = await page_csrf(client, page)
    long = await client.post(
        action, data={"csrf_token": token, "coupon": str(coupon.id), "reason": "长" * 201}
    )
    assert long.status == 400
    html = await long.text()
    assert 'data-field="coupon.reason"' in html and "长" * 201 in html
    done = await client.post(
        action,
        data={"csrf_token": token, "coupon": str(coupon.id), "reason": "发错了"},
        allow_redirects=False,
    )
    assert done.status == 303
    await coupon.refresh_from_db()
    assert coupon.status == CouponStatus.REVOKED
    after = await (await client.get(done.headers["Location"])).text()
    assert "优惠券已作废" in after and "已作废" in after and f'action="{action}"' not in after
