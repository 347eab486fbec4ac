"""The console's 赊账与邀请 settings page: the credit API's overdue days and the invites API's
permanent-or-30-day choice, changed by an admin, refused next to the field, read-only for a manager."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from models.loyalty import AuditLog
from models.merchant import Merchant
from tests.support.console import login, page_csrf, signed_in_shop

PAGE = "/admin/credit/settings"


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await signed_in_shop(client)


async def test_an_admin_changes_the_overdue_days_and_the_invite_codes(
    client: TestClient, shop: Merchant
) -> None:
    html = await (await client.get("/admin/")).text()
    assert f'href="{PAGE}"' in html
    page = await (await client.get(PAGE)).text()
    assert f'name="overdue_days" value="{shop.credit_overdue_days}"' in page
    token = await page_csrf(client, PAGE)
    saved = await client.post(
        f"{PAGE}/credit", data={"csrf_token": token, "overdue_days": "45"}, allow_redirects=False
    )
    assert saved.status == 303 and saved.headers["Location"] == f"{PAGE}?done=credit"
    await shop.refresh_from_db()
    assert shop.credit_overdue_days == 45
    assert "赊账设置已保存" in await (await client.get(saved.headers["Location"])).text()
    flipped = not shop.invite_qr_permanent
    chosen = {"csrf_token": token, "permanent": "true" if flipped else "false"}
    assert (await client.post(f"{PAGE}/invite", data=chosen, allow_redirects=False)).status == 303
    await shop.refresh_from_db()
    assert shop.invite_qr_permanent is flipped
    assert await AuditLog.filter(merchant_id=shop.id).count() == 2


@pytest.mark.parametrize("typed", ["0", "三十", ""])
async def test_a_refused_value_is_named_and_kept(client: TestClient, shop: Merchant, typed: str) -> None:
    before = shop.credit_overdue_days
    token = await page_csrf(client, PAGE)
    refused = await client.post(f"{PAGE}/credit", data={"csrf_token": token, "overdue_days": typed})
    assert refused.status == 400
    html = await refused.text()
    assert 'data-field="credit.overdue_days"' in html and f'name="overdue_days" value="{typed}"' in html
    await shop.refresh_from_db()
    assert shop.credit_overdue_days == before


async def test_a_manager_sees_the_settings_but_cannot_change_them(client: TestClient, shop: Merchant) -> None:
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "mona")).status == 303
    html = await (await client.get(PAGE)).text()
    assert "只有管理员可以修改" in html and "disabled" in html
    token = await page_csrf(client, PAGE)
    before = shop.credit_overdue_days
    refused = await client.post(f"{PAGE}/credit", data={"csrf_token": token, "overdue_days": "45"})
    assert refused.status == 403
    await shop.refresh_from_db()
    assert shop.credit_overdue_days == before
