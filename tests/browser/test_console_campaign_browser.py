"""Campaigns in a real browser against the WeChat API simulator: a subscribe-message campaign built from
its channel's fields (a keyword's content too long is refused next to it), a test send, then the real
send — the page's progress bar reaches 100% while the app's worker path runs the due tasks, and the
report shows the sent counts and the holdout uplift. Then a journey switched on and the marketing caps."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from handlers.notices import reach
from models.campaign import Campaign, CampaignRecipient, Journey, MarketingCaps, RecipientStatus
from models.merchant import Merchant
from tests.browser.conftest import Browser, SimulatedShop
from tests.support.factories import make_member
from webhooks.appkeys import BACKGROUND, EFFECTS

TEMPLATE = "TPL-PROMO"
MEMBERS = 30


@pytest.fixture
async def shop(simulated_shop: SimulatedShop) -> tuple[str, Merchant]:
    """`browser` drives the simulator-backed app."""
    return simulated_shop.base, simulated_shop.merchant


async def subscribers(shop: SimulatedShop, count: int) -> None:
    """Mini-program members each holding one grant of TEMPLATE (ours and the simulator's)."""
    shop.sim.add_template(shop.merchant.mp_appid, TEMPLATE, ("thing1", "thing2"))
    for n in range(count):
        member = await make_member(shop.merchant, openid=f"o-s{n}", mp_openid=f"mp-s{n}", name=f"会员{n}")
        shop.sim.add_follower(shop.merchant.mp_appid, f"mp-s{n}")
        shop.sim.grant(shop.merchant.mp_appid, f"mp-s{n}", TEMPLATE)
        await reach.record_grants(member, [TEMPLATE], [])


async def run_worker_until(shop: SimulatedShop, page: Any, selector: str, *, seconds: float = 90) -> None:
    """The worker's part (the due tasks, as `memberbot worker`'s sweep runs them) while the page polls,
    until `selector` shows on the page."""
    target = page.locator(selector)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await target.count():
        assert loop.time() < deadline, f"{selector} never showed"
        await shop.app[BACKGROUND].drain()
        await shop.app[EFFECTS].run_due(datetime.now(UTC))
        await asyncio.sleep(0.3)


def assert_clean(browser: Browser) -> None:
    assert not browser.errors, browser.errors


async def test_a_campaign_to_the_simulator_reaches_100_and_shows_its_report(
    browser: Browser, simulated_shop: SimulatedShop
) -> None:
    shop, page = simulated_shop, browser.page
    await subscribers(shop, MEMBERS)
    shop.sim.add_follower(shop.merchant.mp_appid, "mp-staff")
    shop.sim.grant(shop.merchant.mp_appid, "mp-staff", TEMPLATE)
    await browser.login()
    await page.click("nav >> text=营销活动")
    await page.fill('input[name="name"]', "会员日")
    await page.select_option('select[name="channel"]', "subscribe")
    await page.wait_for_selector('#channel-fields[data-channel="subscribe"]')  # htmx swapped its fields in
    await page.fill('input[name="template_id"]', TEMPLATE)
    await page.fill('input[name="kw0"]', "thing1")
    await page.fill('input[name="kv0"]', "{{ member_name }}，本周末全场会员专享九折，欢迎到店选购")
    await page.fill('input[name="kw1"]', "thing2")
    await page.fill('input[name="kv1"]', "{{ merchant_name }}")
    await page.fill('input[name="holdout_pct"]', "20")
    await page.click("text=保存草稿")
    error = page.locator('[data-field="kv0"]')
    assert await error.inner_text() == "关键词 thing1 的内容超过 20 个字"
    assert await page.input_value('input[name="kv1"]') == "{{ merchant_name }}"  # the input is kept
    await browser.shot("campaign-form-refused")
    await page.fill('input[name="kv0"]', "{{ member_name }}，会员日到啦")
    await page.click("text=保存草稿")
    await page.wait_for_selector("text=草稿已保存，检查通过")
    assert await page.locator('[data-value="audience"]').inner_text() == str(MEMBERS)
    assert await page.locator('[data-preview-field="thing1"]').inner_text() == "会员0，会员日到啦"
    await page.fill('input[name="to"]', "mp-staff")
    await page.click("text=测试发送")
    await page.wait_for_selector("text=测试消息已发送")
    [tested] = [r for r in shop.sim.records("cgi-bin/message/subscribe/send") if r["errcode"] == 0]
    assert tested["body"]["touser"] == "mp-staff"
    await browser.shot("campaign-draft")
    await page.click("text=立即发送")
    await page.wait_for_selector(
        '#campaign-progress[data-state="sending"], #campaign-progress[data-state="done"]'
    )
    await run_worker_until(shop, page, '#campaign-progress progress[data-percent="100"]')
    await run_worker_until(shop, page, '#campaign-progress[data-state="done"] [data-section="uplift"]')
    campaign = await Campaign.get(merchant_id=shop.merchant.id)
    held = await CampaignRecipient.filter(campaign_id=campaign.id, status=RecipientStatus.HOLDOUT).count()
    assert 0 < held < MEMBERS
    progress = page.locator("#campaign-progress")
    assert await progress.locator('[data-count="sent"]').inner_text() == str(MEMBERS - held)
    assert await progress.locator('[data-count="holdout"]').inner_text() == str(held)
    assert await progress.locator('[data-count="failed"]').inner_text() == "0"
    assert await progress.locator('[data-group="messaged"] [data-value="members"]').inner_text() == str(
        MEMBERS - held
    )
    assert await progress.locator('[data-group="holdout"] [data-value="members"]').inner_text() == str(held)
    assert "转化提升" in await progress.locator('[data-section="uplift"]').inner_text()
    assert await page.get_by_role("button", name="暂停").count() == 0  # the page reloaded once done
    await browser.shot("campaign-report")
    async with page.expect_download() as download_info:
        await page.click('[data-download="recipients"]')
    path = Path(await (await download_info.value).path())
    rows = list(csv.DictReader(io.StringIO(await asyncio.to_thread(path.read_text, encoding="utf-8-sig"))))
    assert len(rows) == MEMBERS
    assert Counter(r["status"] for r in rows) == {"sent": MEMBERS - held, "holdout": held}
    delivered = [
        r["body"]["touser"]
        for r in shop.sim.records("cgi-bin/message/subscribe/send")
        if r["errcode"] == 0 and r["body"]["touser"] != "mp-staff"
    ]
    assert len(delivered) == len(set(delivered)) == MEMBERS - held  # the simulator's record: once each
    assert_clean(browser)


async def test_a_journey_switched_on_and_the_caps_edited(
    browser: Browser, simulated_shop: SimulatedShop
) -> None:
    shop, page = simulated_shop, browser.page
    await browser.login()
    await page.goto(f"{browser.base}/admin/campaigns")
    await page.click("text=自动化旅程")
    await page.fill('input[name="name"]', "新会员关怀")
    await page.select_option('select[name="trigger"]', "days_after_registration")
    await page.fill('input[name="days"]', "3")
    await page.select_option('select[name="channel"]', "custom")
    await page.wait_for_selector('#channel-fields[data-channel="custom"]')
    await page.fill('textarea[name="text"]', "{{ member_name }}，欢迎加入")
    await page.click("text=创建旅程")
    await page.wait_for_selector("text=旅程已创建")
    journey = await Journey.get(merchant_id=shop.merchant.id)
    row = page.locator(f'tr[data-journey="{journey.id}"]')
    assert await row.locator('[data-value="active"]').inner_text() == "未启用"
    await row.get_by_role("button", name="启用").click()
    await page.wait_for_selector("text=旅程已启用", timeout=45_000)  # once slow on a loaded 2-core machine
    assert (
        await page.locator(f'tr[data-journey="{journey.id}"] [data-value="active"]').inner_text() == "已启用"
    )
    await browser.shot("journeys")
    await page.click("text=营销频次上限")
    await page.fill('input[name="marketing_per_day"]', "20")
    await page.click('#caps-form button[type="submit"]')
    assert await page.locator('[data-field="marketing_per_day"]').count() == 1
    assert await page.input_value('input[name="marketing_per_day"]') == "20"
    await page.fill('input[name="marketing_per_day"]', "2")
    await page.click('#caps-form button[type="submit"]')
    await page.wait_for_selector("text=已保存")
    assert (await MarketingCaps.get(merchant_id=shop.merchant.id)).marketing_per_day == 2
    await browser.shot("marketing-caps")
    assert_clean(browser)


@pytest.mark.parametrize("browser", [768], indirect=True)
async def test_the_campaign_pages_fit_a_768px_tablet(browser: Browser, simulated_shop: SimulatedShop) -> None:
    shop, page = simulated_shop, browser.page
    await subscribers(shop, 2)
    await browser.login()
    await page.goto(f"{browser.base}/admin/campaigns")
    await page.fill('input[name="name"]', "会员日")
    await page.select_option('select[name="channel"]', "subscribe")
    await page.wait_for_selector('#channel-fields[data-channel="subscribe"]')
    await page.fill('input[name="template_id"]', TEMPLATE)
    await page.fill('input[name="kw0"]', "thing1")
    await page.fill('input[name="kv0"]', "{{ member_name }}，会员日到啦")
    await page.click("text=保存草稿")
    await page.wait_for_selector("text=草稿已保存，检查通过")
    draft = page.url.partition("?")[0]
    await page.goto(f"{browser.base}/admin/journeys")
    await page.fill('input[name="name"]', "新会员关怀")
    await page.fill('textarea[name="text"]', "{{ member_name }}，欢迎加入")
    await page.click("text=创建旅程")
    await page.wait_for_selector("text=旅程已创建")
    for name, path in (
        ("campaigns", "/admin/campaigns"),
        ("campaign", draft.removeprefix(browser.base)),
        ("journeys", "/admin/journeys"),
        ("caps", "/admin/marketing-caps"),
    ):
        await page.goto(f"{browser.base}{path}")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 768, f"{path} scrolls sideways at 768 px ({width} px)"
        await browser.shot(f"tablet-{name}")
    assert_clean(browser)
