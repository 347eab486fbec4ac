"""The notices page's quiet hours and its reset of a customised notice to the built-in defaults."""

from __future__ import annotations

from datetime import time

import pytest
from aiohttp.test_utils import TestClient

from handlers.notices import settings as notice_settings
from models.loyalty import AuditLog
from models.merchant import Merchant
from tests.support.console import login, page_csrf, signed_in_shop

PAGE = "/admin/programme/notices"


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await signed_in_shop(client)


async def test_quiet_hours_are_shown_saved_and_refused_with_the_input_kept(
    client: TestClient, shop: Merchant
) -> None:
    html = await (await client.get(PAGE)).text()
    assert 'name="start" value="22:00"' in html
    token = await page_csrf(client, PAGE)
    bad = await client.post(
        "/admin/programme/quiet-hours", data={"csrf_token": token, "start": "25:00", "end": "08:00"}
    )
    assert bad.status == 400
    text = await bad.text()
    assert 'data-field="quiet.start"' in text and 'name="start" value="25:00"' in text
    assert (
        await client.post("/admin/programme/quiet-hours", data={"start": "21:00", "end": "08:00"})
    ).status == 403
    done = await client.post(
        "/admin/programme/quiet-hours",
        data={"csrf_token": token, "start": "21:30", "end": "07:00"},
        allow_redirects=False,
    )
    assert done.status == 303
    await shop.refresh_from_db()
    assert shop.quiet_hours == (time(21, 30), time(7, 0))
    assert await AuditLog.filter(merchant_id=shop.id, action="notice.quiet_hours").exists()
    after = await (await client.get(done.headers["Location"])).text()
    assert "免打扰时段已保存" in after and 'name="start" value="21:30"' in after


async def test_a_customised_notice_is_reset_after_a_confirmation(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, PAGE)
    form = {"csrf_token": token, "enabled": "true", "channel_custom": "true", "body": "谢谢{{ member_name }}"}
    assert (await client.post(f"{PAGE}/purchase_receipt", data=form, allow_redirects=False)).status == 303
    html = await (await client.get(PAGE)).text()
    assert f'action="{PAGE}/purchase_receipt/reset"' in html and "恢复为系统默认设置" in html
    assert (await client.post(f"{PAGE}/purchase_receipt/reset", data={})).status == 403
    reset = await client.post(
        f"{PAGE}/purchase_receipt/reset", data={"csrf_token": token}, allow_redirects=False
    )
    assert reset.status == 303
    setting = await notice_settings.setting(shop.id, "purchase_receipt")
    assert setting.as_dict()["body"] != "谢谢{{ member_name }}"
    assert f'action="{PAGE}/purchase_receipt/reset"' not in await (await client.get(PAGE)).text()
    assert (await client.post(f"{PAGE}/no_such_kind/reset", data={"csrf_token": token})).status == 404


async def test_managers_cannot_change_quiet_hours(client: TestClient, shop: Merchant) -> None:
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "mona")).status == 303
    token = await page_csrf(client)
    refused = await client.post(
        "/admin/programme/quiet-hours", data={"csrf_token": token, "start": "20:00", "end": "08:00"}
    )
    assert refused.status == 403
    await shop.refresh_from_db()
    assert shop.quiet_hours == (time(22, 0), time(8, 0))
