"""The console's edit pages in a real browser: a coupon template and a mall item edited (a refusal first,
shown next to the field with the input kept), a never-issued template deleted after the confirmation
dialog, a segment edited while its audience count follows, a member's stored value adjusted, and every
edit page fitting a 768 px tablet (the segment, member and settings pages at 1280 px too)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from handlers.mall import catalogue
from handlers.products import catalogue as products
from handlers.segments import catalogue as segments
from handlers.wallet import service_cards
from models.cards import CardKind
from models.coupon import CouponTemplate
from models.mall import ItemKind, MallItem
from models.member import Member
from models.merchant import Merchant
from models.tag import Segment
from models.wallet import WalletAccount
from tests.browser.conftest import Browser
from tests.support.factories import make_member


def assert_clean(browser: Browser) -> None:
    assert not browser.errors, browser.errors


async def make_template(page: Any, base: str) -> CouponTemplate:
    await page.goto(f"{base}/admin/coupons")
    form = page.locator("#template-form")
    await form.locator('input[name="name"]').fill("满50减10")
    await form.locator('input[name="threshold_fen"]').fill("50")
    await form.locator('input[name="amount_off_fen"]').fill("10")
    await form.locator('input[name="valid_days"]').fill("7")
    await form.locator('button[type="submit"]').click()
    await page.wait_for_selector("text=优惠券模板已创建")
    return await CouponTemplate.get(name="满50减10")


async def test_edit_a_coupon_template_then_delete_it(browser: Browser, shop: tuple[str, Merchant]) -> None:
    page = browser.page
    await browser.login()
    template = await make_template(page, browser.base)
    await page.click(f'[data-template="{template.id}"] >> text=编辑')
    form = page.locator("#template-edit")
    assert await form.locator('input[name="amount_off_fen"]').input_value() == "10.00"
    await form.locator('input[name="name"]').fill("满50减15")
    await form.locator('input[name="amount_off_fen"]').fill("15.xx")  # a typo first
    await form.locator('button[type="submit"]').click()
    await page.locator('[data-field="template.amount_off_fen"]').wait_for()
    assert await page.locator('#template-edit input[name="name"]').input_value() == "满50减15"
    await browser.shot("coupon-edit-refused")
    await page.locator('#template-edit input[name="amount_off_fen"]').fill("15")
    await page.locator('#template-edit button[type="submit"]').click()
    await page.wait_for_selector("text=优惠券模板已修改")
    row = page.locator(f'[data-template="{template.id}"]')
    assert "满50减15" in await row.inner_text() and "减15" in await row.inner_text()
    await browser.shot("coupon-edited")
    await template.refresh_from_db()
    assert (template.name, template.amount_off_fen) == ("满50减15", 1_500)

    await page.goto(f"{browser.base}/admin/coupons/templates/{template.id}")
    questions: list[str] = []

    async def answer(dialog: Any) -> None:
        questions.append(dialog.message)
        await (dialog.dismiss() if len(questions) == 1 else dialog.accept())

    page.on("dialog", answer)
    await page.click("#template-delete button")  # dismissed: nothing happens
    assert await CouponTemplate.exists(id=template.id)
    await page.click("#template-delete button")
    await page.wait_for_selector("text=优惠券模板已删除")
    assert questions[0].startswith("确定删除优惠券模板「满50减15」")
    assert not await CouponTemplate.exists(id=template.id)
    assert_clean(browser)


async def test_edit_a_mall_item(browser: Browser, shop: tuple[str, Merchant]) -> None:
    page = browser.page
    data = catalogue.ItemInput(name="帆布袋", price_points=300)
    item = await catalogue.create_item(shop[1], ItemKind.PICKUP, data, stock=4, actor="test")
    await browser.login()
    await page.goto(f"{browser.base}/admin/mall")
    await page.click(f'[data-item="{item.id}"] >> text=帆布袋')
    form = page.locator("#item-edit")
    assert await form.locator('input[name="price_points"]').input_value() == "300"
    await form.locator('input[name="name"]').fill("大号帆布袋")
    await form.locator('input[name="price_points"]').fill("0")
    await form.locator('button[type="submit"]').click()
    await page.locator('[data-field="item.price_points"]').wait_for()
    assert await page.locator('#item-edit input[name="name"]').input_value() == "大号帆布袋"
    await browser.shot("mall-item-refused")
    await page.locator('#item-edit input[name="price_points"]').fill("350")
    await page.locator('#item-edit input[name="limit_per_member"]').fill("2")
    await page.locator('#item-edit button[type="submit"]').click()
    await page.wait_for_selector("text=商品已修改")
    row = page.locator(f'[data-item="{item.id}"]')
    assert "大号帆布袋" in await row.inner_text() and "350" in await row.inner_text()
    await browser.shot("mall-item-edited")
    await page.click(f'[data-item="{item.id}"] >> text=大号帆布袋')
    stock = page.locator("#item-stock")
    await stock.locator('input[name="delta"]').fill("6")
    await stock.locator('button[type="submit"]').click()
    await page.wait_for_selector("text=库存已更新")
    assert await page.locator(f'h1 [data-stock="{item.id}"]').inner_text() == "10"
    saved = await MallItem.get(id=item.id)
    assert (saved.name, saved.price_points, saved.limit_per_member, saved.stock) == ("大号帆布袋", 350, 2, 10)
    assert_clean(browser)


@pytest.mark.parametrize("browser", [768], indirect=True)
async def test_edit_pages_fit_a_768px_tablet(browser: Browser, shop: tuple[str, Merchant]) -> None:
    page = browser.page
    merchant = shop[1]
    item = await catalogue.create_item(
        merchant, ItemKind.PICKUP, catalogue.ItemInput(name="帆布袋", price_points=300), stock=1, actor="t"
    )
    card = service_cards.ProductInput(CardKind.COUNT, "洗剪吹 10 次卡", "洗剪吹", 10, 365, 29_800, True)
    card_product = await service_cards.create_product(merchant, card, actor="t")
    product = await products.create_product(
        merchant.id, "LATTE", products.ProductInput("拿铁", 2_800), actor="t"
    )
    await browser.login()
    template = await make_template(page, browser.base)
    pages = (
        ("coupon-edit", f"/admin/coupons/templates/{template.id}"),
        ("mall-item", f"/admin/mall/items/{item.id}"),
        ("card-product", f"/admin/cards/products/{card_product.id}"),
        ("product", f"/admin/products/{product.id}"),
    )
    for name, path in pages:
        await page.goto(f"{browser.base}{path}")
        assert await page.locator("form.stack button[type=submit]").count() >= 1, path
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 768, f"{path} scrolls sideways at 768 px ({width} px)"
        await browser.shot(f"tablet-{name}")
    assert_clean(browser)


async def women_segment(merchant: Merchant) -> Segment:
    for key, gender in (("a", "female"), ("b", "female"), ("c", "male")):
        await make_member(merchant, f"o-{key}", name=f"会员{key}", gender=gender)
    women = {"and": [{"attr": "gender", "op": "in", "value": ["female"]}]}
    return await segments.create_segment(merchant.id, "女性会员", women, actor="test")


async def test_edit_a_segment_and_watch_its_count(browser: Browser, shop: tuple[str, Merchant]) -> None:
    page = browser.page
    segment = await women_segment(shop[1])
    await browser.login()
    await page.goto(f"{browser.base}/admin/segments")
    await page.click(f'[data-segment="{segment.id}"] >> text=女性会员')
    count = page.locator('#audience [data-value="audience"]')
    await count.filter(has_text=re.compile("^2$")).wait_for()
    form = page.locator("#segment-edit")
    assert await form.locator('input[name="c0_value"]').input_value() == "female"
    await form.locator('input[name="name"]').fill("男性会员")
    await form.locator('input[name="c0_value"]').fill("male")
    await count.filter(has_text=re.compile("^1$")).wait_for()
    assert await count.inner_text() == "1"
    await browser.shot("segment-edit-count")
    await form.locator('button[type="submit"]').click()
    await page.wait_for_selector("text=人群已保存")
    await segment.refresh_from_db()
    assert (segment.name, segment.expression["and"][0]["value"]) == ("男性会员", ["male"])
    assert_clean(browser)


async def test_adjust_a_members_stored_value(browser: Browser, shop: tuple[str, Merchant]) -> None:
    page = browser.page
    member = await make_member(shop[1], "o-w", name="张三")
    await browser.login()
    await page.goto(f"{browser.base}/admin/members/{member.id}")
    questions: list[str] = []

    async def answer(dialog: Any) -> None:
        questions.append(dialog.message)
        await dialog.accept()

    page.on("dialog", answer)
    form = page.locator("#wallet-adjust")
    await form.locator('input[name="principal"]').fill("88")
    await form.locator('input[name="reason"]').fill("补录充值")
    await form.locator('button[type="submit"]').click()
    await page.wait_for_selector("text=储值已调整")
    assert questions == ["确定调整该会员的储值余额？"]
    assert "补录充值" in await page.locator("table.wallet-ledger").inner_text()
    account = await WalletAccount.get(member_id=member.id)
    assert (account.principal_fen, account.bonus_fen) == (8_800, 0)
    assert_clean(browser)


@pytest.mark.parametrize("browser", [1280, 768], indirect=True)
async def test_the_new_pages_at_desktop_and_tablet_widths(
    browser: Browser, shop: tuple[str, Merchant]
) -> None:
    page = browser.page
    segment = await women_segment(shop[1])
    member = await Member.get(name="会员a")
    await browser.login()
    width = page.viewport_size["width"] if page.viewport_size else 0
    pages = (
        ("segment-edit", f"/admin/segments/{segment.id}"),
        ("member-wallet", f"/admin/members/{member.id}"),
        ("credit-settings", "/admin/credit/settings"),
    )
    for name, path in pages:
        await page.goto(f"{browser.base}{path}")
        assert await page.locator("form.stack button[type=submit]").count() >= 1, path
        scrolled = await page.evaluate("document.documentElement.scrollWidth")
        assert scrolled <= width, f"{path} scrolls sideways at {width} px ({scrolled} px)"
        await browser.shot(f"{name}-{width}")
    assert_clean(browser)
