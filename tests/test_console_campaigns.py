"""Console pages of campaigns over HTTP: a draft from the form (errors kept next to the field), its
preview and check, starting it, the progress reaching 100% and the report with the holdout."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient

from models.campaign import Campaign
from models.merchant import Merchant
from tests.support.console import login, make_staff, page_csrf
from tests.support.factories import make_member, make_merchant
from webhooks.appkeys import EFFECTS


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    for n in range(4):
        await make_member(merchant, f"o-c{n}", name=f"会员{n}")
    assert (await login(client, "shop", "alice")).status == 303
    return merchant


async def test_a_campaign_from_draft_to_its_report(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/campaigns")
    draft = {
        "csrf_token": token,
        "name": "周末活动",
        "channel": "custom",
        "text": "{{ member_name }}，周末见",
        "holdout_pct": "0",
        "attach_points": "0",
        "conversion_days": "7",
    }
    bad = await client.post("/admin/campaigns", data={**draft, "holdout_pct": "80"})
    assert bad.status == 400
    text = await bad.text()
    assert 'data-field="holdout_pct"' in text and 'value="周末活动"' in text
    made = await client.post("/admin/campaigns", data=draft, allow_redirects=False)
    assert made.status == 303, await made.text()
    location = made.headers["Location"]
    html = await (await client.get(location)).text()
    assert 'data-value="audience">4<' in html and "，周末见" in html
    checked = await client.post(f"{location}/validate", data={"csrf_token": token}, allow_redirects=False)
    assert checked.status == 303, await checked.text()
    started = await client.post(f"{location}/start", data={"csrf_token": token}, allow_redirects=False)
    assert started.status == 303, await started.text()
    for _ in range(200):  # the worker's part, run here as the import tests do
        await client.app[EFFECTS].run_due(datetime.now(UTC))
        fragment = await (await client.get(location, headers={"HX-Request": "true"})).text()
        if 'data-percent="100"' in fragment:
            break
        await asyncio.sleep(0.05)
    assert 'data-percent="100"' in fragment, fragment
    assert "<html" not in fragment  # htmx polls the progress fragment only
    page = await (await client.get(location)).text()
    assert "转化提升" in page
    campaign = await Campaign.get(merchant_id=shop.id)
    assert re.search(r'data-state="(done|sending)"', page) and campaign.name == "周末活动"
