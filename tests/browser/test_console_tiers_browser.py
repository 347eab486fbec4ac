"""The tier ladder and the other programme settings edited field by field in a real browser, at 1280 px
and on a 768 px tablet: a refusal next to its field first, then a tier changed, one added by htmx."""

from __future__ import annotations

import pytest

from handlers.loyalty import config as loyalty_config
from handlers.rules.tiers_config import tiers_to_dicts
from models.coupon import CouponTemplate
from models.merchant import Merchant
from tests.browser.conftest import Browser


async def fits(browser: Browser, width: int) -> None:
    scrolled = await browser.page.evaluate("document.documentElement.scrollWidth")
    assert scrolled <= width, f"{browser.page.url} scrolls sideways at {width} px ({scrolled} px)"


@pytest.mark.parametrize("browser", [1280, 768], indirect=True)
async def test_change_a_tier_and_add_one_through_the_fields(
    browser: Browser, shop: tuple[str, Merchant]
) -> None:
    page = browser.page
    width = page.viewport_size["width"] if page.viewport_size else 1280
    await browser.login()
    await page.goto(f"{browser.base}/admin/coupons")
    template = page.locator("#template-form")
    await template.locator('input[name="name"]').fill("金卡升级礼")
    await template.locator('input[name="threshold_fen"]').fill("50")
    await template.locator('input[name="amount_off_fen"]').fill("10")
    await template.locator('input[name="valid_days"]').fill("7")
    await template.locator('button[type="submit"]').click()
    await page.wait_for_selector("text=优惠券模板已创建")
    gift = await CouponTemplate.get(name="金卡升级礼")

    await page.goto(f"{browser.base}/admin/programme")
    gold = page.locator("#tier-2")
    await gold.locator('input[name="tiers[2].benefits.points_multiplier"]').fill("-1")
    await page.locator('#tiers-form button[type="submit"]').click()
    error = page.locator('[data-field="tiers[2].benefits.points_multiplier"]')
    await error.wait_for()
    assert "不能为负数" in await error.inner_text()
    assert await page.input_value('input[name="tiers[2].benefits.points_multiplier"]') == "-1"
    await fits(browser, width)
    await browser.shot(f"tiers-refused-{width}")

    await page.fill('input[name="tiers[2].benefits.points_multiplier"]', "1.8")
    await page.select_option(
        'select[name="tiers[2].benefits.upgrade_gift_coupon_template_ids"]', [str(gift.id)]
    )
    await page.click("#add-tier")  # htmx brings a seventh row (four tiers, two blank rows, one more)
    await page.locator('input[name="tiers[6].code"]').wait_for()
    await page.fill('input[name="tiers[6].name"]', "黑金")
    await page.fill('input[name="tiers[6].code"]', "black")
    await page.fill('input[name="tiers[6].criteria.spend_fen"]', "50000")
    await page.locator('#tiers-form button[type="submit"]').click()
    await page.wait_for_selector("text=等级体系已保存为第 2 版")
    version, tiers = await loyalty_config.current_tiers(shop[1].id)
    saved = {tier["code"]: tier for tier in tiers_to_dicts(tiers)}
    assert version == 2 and list(saved) == ["normal", "silver", "gold", "diamond", "black"]
    assert saved["gold"]["benefits"]["points_multiplier"] == "1.8"
    assert saved["gold"]["benefits"]["upgrade_gift_coupon_template_ids"] == [gift.id]
    assert saved["black"]["criteria"]["spend_fen"] == 5_000_000
    assert await page.input_value('input[name="tiers[4].name"]') == "黑金"
    await fits(browser, width)
    await browser.shot(f"tiers-{width}")

    await page.goto(f"{browser.base}/admin/programme/settings")
    other = page.locator("#other-form")
    await other.locator('input[name="registration_bonus"]').fill("188")
    await other.locator('input[name="referral.level_points[2]"]').fill("10")
    await other.locator('button[type="submit"]').click()
    await page.wait_for_selector("text=已保存")
    program = await loyalty_config.program(shop[1].id)
    assert (program.registration_bonus, program.referral.level_points) == (188, (100, 30, 10))
    await fits(browser, width)
    await browser.shot(f"settings-{width}")
    assert not browser.errors, browser.errors
