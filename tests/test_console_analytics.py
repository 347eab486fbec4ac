"""Console pages of the analyses over HTTP: every analysis renders with its filters, a bad filter is
named, the table shows money in yuan, and the downloads are the API's exports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient

from handlers.analytics import refresh
from handlers.till import purchase as purchases
from models.loyalty import AuditLog
from models.merchant import Merchant
from tests.support.console import login, make_staff
from tests.support.factories import EFFECTS, make_member, make_merchant
from webhooks.admin_analytics import ANALYSES


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    member = await make_member(merchant, "o-a", name="甲")
    request = purchases.PurchaseRequest("p1", member.id, 12_345)
    await purchases.record_purchase(merchant, None, request, now=datetime.now(UTC), effects=EFFECTS)
    await refresh.refresh()  # the worker's roll-up of new purchases
    assert (await login(client, "shop", "alice")).status == 303
    return merchant


async def test_every_analysis_renders(client: TestClient, shop: Merchant) -> None:
    index = await (await client.get("/admin/analytics")).text()
    for spec in ANALYSES:
        assert f'href="/admin/analytics/{spec.path}"' in index
        response = await client.get(f"/admin/analytics/{spec.path}")
        assert response.status == 200, (spec.path, await response.text())
        assert f"<h1>{spec.title}" in await response.text()


async def test_sales_trend_in_yuan_with_a_chart_and_downloads(client: TestClient, shop: Merchant) -> None:
    today = datetime.now(UTC).astimezone().date()
    html = await (await client.get("/admin/analytics/sales/trend?grain=day")).text()
    assert "123.45" in html
    assert "下载 CSV" in html
    bad = await client.get("/admin/analytics/sales/trend?grain=hour")
    assert bad.status == 400 and 'data-field="grain"' in await bad.text()
    export = await client.get(f"/admin/analytics/sales/trend/export?grain=day&format=csv&date_to={today}")
    assert export.status == 200 and export.headers["Content-Type"].startswith("text/csv")
    assert "123.45" in (await export.read()).decode("utf-8-sig")
    assert await AuditLog.filter(merchant_id=shop.id, action="analytics.export").exists()
