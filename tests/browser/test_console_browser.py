"""The console in a real browser: log in, the dashboard's chart, a CSRF-less POST refused, logout."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from handlers.analytics import thresholds
from handlers.loyalty import config as loyalty_config
from handlers.mall import catalogue
from handlers.till import purchase as purchases
from models.coupon import Coupon
from models.mall import ItemKind
from models.member import Member
from models.merchant import Merchant
from models.points import PointsAccount
from tests.browser.conftest import Browser
from tests.support.factories import EFFECTS, make_member


async def downloaded(download: Any) -> str:
    """A finished download's text (UTF-8, with or without BOM)."""
    path = Path(await download.path())
    return await asyncio.to_thread(path.read_text, encoding="utf-8-sig")


def assert_clean(browser: Browser) -> None:
    """No script error and no CSP violation on the pages visited."""
    assert not browser.errors, browser.errors


async def test_log_in_see_the_dashboard_and_log_out(browser: Browser) -> None:
    page = browser.page
    await page.goto(f"{browser.base}/admin/")
    assert page.url.startswith(f"{browser.base}/admin/login")
    await browser.shot("login")
    await browser.login("alice", "wrong-password")
    assert await page.locator('[data-field="password"]').inner_text() == "用户名或密码错误"
    assert await page.input_value('input[name="username"]') == "alice"
    await browser.login()
    assert page.url == f"{browser.base}/admin/"
    await page.wait_for_selector('#trend[data-drawn="1"] canvas')
    assert await page.locator('[data-kpi="liability"]').inner_text() == "0.00"
    await browser.shot("dashboard")
    await page.click("text=退出登录")
    await page.wait_for_url(f"{browser.base}/admin/login")
    await page.goto(f"{browser.base}/admin/")
    assert page.url.startswith(f"{browser.base}/admin/login")
    assert_clean(browser)


async def test_a_post_without_the_csrf_token_is_refused(browser: Browser) -> None:
    page = browser.page
    await browser.login()
    # The browser sends the session cookie (same origin) but no token: refused, and still logged in.
    result = await page.evaluate(
        """async () => {
            const r = await fetch('/admin/logout', {method: 'POST',
                headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: ''});
            return [r.status, await r.text()];
        }"""
    )
    assert result[0] == 403
    assert "安全令牌" in result[1]
    await page.goto(f"{browser.base}/admin/")
    assert page.url == f"{browser.base}/admin/"
    assert_clean(browser)


async def test_create_a_coupon_and_issue_it(browser: Browser, shop: tuple[str, Merchant]) -> None:
    page = browser.page
    member = await make_member(shop[1], "o-b1", name="王小明", phone="13900000011")
    await browser.login()
    await page.click("nav >> text=优惠券")
    form = page.locator("#template-form")
    await form.locator('input[name="name"]').fill("满50减10")
    await form.locator('select[name="kind"]').select_option("fixed")
    await form.locator('input[name="threshold_fen"]').fill("50")
    await form.locator('input[name="amount_off_fen"]').fill("10.5x")  # a typo first
    await form.locator('input[name="valid_days"]').fill("7")
    await form.locator('button[type="submit"]').click()
    error = page.locator('[data-field="template.amount_off_fen"]')
    await error.wait_for()
    assert await page.locator('#template-form input[name="name"]').input_value() == "满50减10"
    await browser.shot("coupons-refused")
    await page.locator('#template-form input[name="amount_off_fen"]').fill("10")
    await page.locator('#template-form button[type="submit"]').click()
    await page.wait_for_selector("text=优惠券模板已创建")
    assert "满50减10" in await page.locator("table.templates").inner_text()
    issue = page.locator("#issue-form")
    await issue.locator('input[name="member_code"]').fill(member.code)
    await issue.locator('input[name="reason"]').fill("开业活动")
    await issue.locator('button[type="submit"]').click()
    notice = page.locator("[data-issued]")
    await notice.wait_for()
    assert f"已向会员 {member.code} 发放「满50减10」" in await notice.inner_text()
    await browser.shot("coupons")
    coupon = await Coupon.get(member_id=member.id)
    assert coupon.code == await notice.get_attribute("data-issued")
    assert_clean(browser)


async def test_change_an_earn_rule_after_reading_its_simulation(
    browser: Browser, shop: tuple[str, Merchant]
) -> None:
    page = browser.page
    merchant = shop[1]
    member = await make_member(merchant, "o-b2")
    for n, fen in enumerate((10_000, 5_050)):
        request = purchases.PurchaseRequest(f"b{n}", member.id, fen)
        await purchases.record_purchase(merchant, None, request, now=datetime.now(UTC), effects=EFFECTS)
    await browser.login()
    await page.goto(f"{browser.base}/admin/programme/rules")
    await page.fill('input[name="points_per_yuan"]', "2")
    await page.click("[data-simulate]")
    await page.wait_for_selector('[data-sim="proposed-points"]')
    # 100.00 + 50.50 yuan: 100 + 50 points at 1 a yuan (each rounded down), 200 + 101 at 2 a yuan.
    assert await page.locator('[data-sim="current-points"]').inner_text() == "150"
    assert await page.locator('[data-sim="proposed-points"]').inner_text() == "301"
    assert await page.locator('[data-sim="diff-points"]').inner_text() == "+151"
    await browser.shot("rules-simulated")
    await page.click('button[name="simulated"]')
    await page.wait_for_selector("text=已保存为第 2 版")
    rules = await loyalty_config.current_rules(merchant.id)
    assert (rules.version, str(rules.points_per_yuan)) == (2, "2")
    await browser.shot("rules")
    assert_clean(browser)


async def test_import_a_small_member_file_dry_run_then_real(
    browser: Browser, shop: tuple[str, Merchant], tmp_path: Path
) -> None:
    page = browser.page
    file = tmp_path / "members.csv"
    file.write_text(
        "会员号,手机号,姓名,积分\nA01,13900000021,陈一,80\nA02,13900000022,陈二,0\nA03,123,坏号,0\n"
    )
    await browser.login()
    await page.goto(f"{browser.base}/admin/members")
    await page.click("text=批量导入")
    await page.set_input_files('input[name="file"]', str(file))
    assert await page.is_checked('input[name="dry_run"]')
    await page.click("text=开始导入")
    await page.wait_for_selector('#import-job[data-status="done"]')  # htmx polls until done
    assert await page.locator('[data-count="created"]').inner_text() == "2"
    assert await page.locator('[data-count="rejected"]').inner_text() == "1"
    await browser.shot("import-dry-run")
    assert not await Member.filter(external_id="A01").exists()
    async with page.expect_download() as report:
        await page.click("text=下载报告（CSV）")
    text = await downloaded(await report.value)
    assert "A03" in text
    await page.set_input_files('input[name="file"]', str(file))
    await page.uncheck('input[name="dry_run"]')
    await page.click("text=开始导入")
    await page.wait_for_selector('#import-job[data-status="done"]')
    assert "正式导入" in await page.locator("#import-job h2").inner_text()
    assert await page.locator('[data-count="created"]').inner_text() == "2"
    chen = await Member.get(external_id="A01")
    assert (await PointsAccount.get(member_id=chen.id)).balance == 80
    await browser.shot("import")
    assert_clean(browser)


async def test_search_open_a_member_and_download_the_csv(
    browser: Browser, shop: tuple[str, Merchant]
) -> None:
    page = browser.page
    merchant = shop[1]
    await make_member(merchant, "o-b3", name="周杰", phone="13900000031")
    await make_member(merchant, "o-b4", name="周星", phone="13900000032")
    await make_member(merchant, "o-b5", name="吴彦", phone="13900000033")
    await browser.login()
    await page.click("nav >> text=会员")
    await page.fill('input[name="name"]', "周")
    await page.click("text=搜索")
    await page.wait_for_url("**/admin/members?*")
    assert await page.locator("table.members tbody tr").count() == 2
    await browser.shot("members")
    async with page.expect_download() as download:
        await page.click("text=导出 CSV")
    rows = list(csv.reader(io.StringIO(await downloaded(await download.value))))
    names = sorted(row[rows[0].index("姓名")] for row in rows[1:])
    assert names == ["周星", "周杰"]
    assert all("****" in row[rows[0].index("手机号")] for row in rows[1:])
    await page.click("table.members tr:has-text('周杰') a")
    await page.fill('input[name="delta"]', "50")
    await page.fill('input[name="reason"]', "生日关怀")
    await page.click("text=确认调整")
    await page.wait_for_selector("text=积分已调整")
    assert await page.locator('[data-value="points"]').inner_text() == "50"
    await browser.shot("member")
    assert_clean(browser)


@pytest.mark.parametrize("browser", [768], indirect=True)
async def test_pages_fit_a_768px_tablet(browser: Browser, shop: tuple[str, Merchant]) -> None:
    page = browser.page
    member = await make_member(shop[1], "o-tablet", name="平板", phone="13900000099")
    await browser.login()
    pages = (
        ("dashboard", "/admin/"),
        ("members", "/admin/members"),
        ("member", f"/admin/members/{member.id}"),
        ("segments", "/admin/segments"),
        ("rules", "/admin/programme/rules"),
        ("coupons", "/admin/coupons"),
        ("mall", "/admin/mall"),
        ("stores", "/admin/stores"),
        ("audit", "/admin/audit"),
    )
    for name, path in pages:
        await page.goto(f"{browser.base}{path}")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 768, f"{path} scrolls sideways at 768 px ({width} px)"
        await browser.shot(f"tablet-{name}")
    assert_clean(browser)


async def test_a_notice_text_previews_as_it_is_typed(browser: Browser) -> None:
    page = browser.page
    await browser.login()
    await page.goto(f"{browser.base}/admin/programme/notices")
    preview = page.locator('#preview-purchase_receipt [data-preview="body"]')
    await preview.wait_for()  # the saved text, previewed on load
    body = page.locator('#notice-purchase_receipt textarea[name="body"]')
    await body.fill("{{ member_name }}您好，本次消费 {{ amount }} 元")
    # (the CSP forbids eval, so the wait is a locator, not a JavaScript predicate)
    await page.locator(
        '#preview-purchase_receipt [data-preview="body"]', has_text="张三您好，本次消费"
    ).wait_for()
    await body.fill("{{ nobody }}")
    await page.locator('#preview-purchase_receipt [data-field="preview-body"]').wait_for()
    await browser.shot("notices")
    assert_clean(browser)


async def test_screenshots_of_the_other_pages(browser: Browser, shop: tuple[str, Merchant]) -> None:
    page = browser.page
    data = catalogue.ItemInput(name="帆布袋", price_points=300)
    item = await catalogue.create_item(shop[1], ItemKind.PICKUP, data, stock=4, actor="test")
    await thresholds.set_low_stock(shop[1].id, item.id, 5, actor="test")
    await browser.login()
    for name, path in (
        ("programme", "/admin/programme"),
        ("settings", "/admin/programme/settings"),
        ("menu", "/admin/programme/menu"),
        ("mall", "/admin/mall"),
        ("stores", "/admin/stores"),
        ("audit", "/admin/audit"),
    ):
        await page.goto(f"{browser.base}{path}")
        assert await page.locator("h1").count() == 1, path
        await browser.shot(name)
    await page.goto(f"{browser.base}/admin/")
    assert "帆布袋" in await page.locator("table.low-stock").inner_text()  # below its threshold of 5
    assert_clean(browser)


async def test_build_a_segment_and_watch_its_count(browser: Browser, shop: tuple[str, Merchant]) -> None:
    page = browser.page
    merchant = shop[1]
    for key, gender in (("s1", "female"), ("s2", "female"), ("s3", "male")):
        await make_member(merchant, f"o-{key}", name=f"会员{key}", gender=gender)
    await browser.login()
    await page.click("nav >> text=人群")
    count = page.locator('[data-value="audience"]')
    await page.select_option('select[name="c0_field"]', "gender")
    await page.select_option('select[name="c0_op"]', "in")
    await page.fill('input[name="c0_value"]', "female")
    await page.locator('[data-value="audience"]', has_text="2").wait_for()
    await page.select_option('select[name="mode"]', "or")
    await page.select_option('select[name="c1_field"]', "gender")
    await page.select_option('select[name="c1_op"]', "in")
    await page.fill('input[name="c1_value"]', "male")
    await page.locator('[data-value="audience"]', has_text="3").wait_for()
    assert await count.inner_text() == "3"
    await browser.shot("segments")
    await page.fill('input[name="name"]', "全部会员")
    await page.click("text=保存人群")
    await page.wait_for_selector("text=人群已保存")
    assert "全部会员" in await page.locator("table.segments").inner_text()
    assert_clean(browser)


async def test_run_a_campaign_and_watch_the_progress_reach_100(
    browser: Browser, shop: tuple[str, Merchant]
) -> None:
    """The test app's WeChat is unreachable, so each message fails at once: the progress still has to
    reach 100% (sent, failed and skipped are all done) and the report must show."""
    page = browser.page
    for n in range(3):
        await make_member(shop[1], f"o-camp{n}", name=f"会员{n}")
    await browser.login()
    await page.click("nav >> text=营销活动")
    await page.fill('input[name="name"]', "周末问候")
    await page.select_option('select[name="channel"]', "custom")
    await page.wait_for_selector('#channel-fields[data-channel="custom"]')  # htmx swapped its fields in
    await page.fill('textarea[name="text"]', "{{ member_name }}，周末愉快")
    await page.fill('input[name="holdout_pct"]', "0")
    await page.click("text=保存草稿")
    await page.wait_for_selector('[data-value="audience"]')
    assert await page.locator('[data-value="audience"]').inner_text() == "3"
    assert "，周末愉快" in await page.locator('[data-preview="campaign"]').inner_text()
    await page.click("text=检查内容")
    await page.wait_for_selector("text=检查通过")
    await page.click("text=立即发送")
    await page.locator('#campaign-progress progress[data-percent="100"]').wait_for(timeout=60_000)
    await page.locator("#campaign-progress", has_text="转化提升").wait_for()
    await browser.shot("campaign")
    assert_clean(browser)
