"""Console pages of one flash sale or group deal, and of one journey: the form filled with the current
values, a refused save shown again with the error next to the field and the input kept, a save that
sends only what changed, and "立即结束" (from the page and from the mall list) behind a confirmation."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from handlers.campaigns import journeys
from handlers.campaigns.journeys import JourneyDraft
from handlers.campaigns.manage import Draft
from handlers.mall import flash, groups
from models.campaign import Campaign, Journey
from models.mall import DealGroup, FlashSale, GroupDeal, GroupStatus
from models.merchant import Merchant
from tests.support.console import login, page_csrf, signed_in_shop
from tests.test_flash import make_item

ZONE = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await signed_in_shop(client)


def field_error(html: str, field: str) -> str:
    found = re.search(rf'data-field="{re.escape(field)}">([^<]*)<', html)
    assert found, f"no error next to {field}"
    return found.group(1)


def local(moment: datetime) -> str:
    return moment.astimezone(ZONE).strftime("%Y-%m-%dT%H:%M")


async def running_sale(merchant: Merchant) -> FlashSale:
    item = await make_item(merchant, stock=20)
    now = datetime.now(UTC)
    spec = flash.SaleSpec(
        item.id, 100, 5, 1, now - timedelta(minutes=5, seconds=17), now + timedelta(hours=1)
    )
    return await flash.create_sale(merchant.id, spec, now=now, actor="test")


async def test_a_running_sales_form_saves_its_end_and_refuses_a_price_by_the_field(
    client: TestClient, shop: Merchant
) -> None:
    sale = await running_sale(shop)
    url = f"/admin/mall/flash-sales/{sale.id}"
    html = await (await client.get(url)).text()
    assert 'name="price_points" value="100"' in html and f'value="{local(sale.ends_at)}"' in html
    assert 'data-confirm="确定立即结束这个秒杀活动？' in html
    token = await page_csrf(client, url)
    shown = {
        "csrf_token": token,
        "price_points": "100",
        "stock": "5",
        "limit_per_member": "1",
        "starts_at": local(sale.starts_at),  # shown to the minute: unchanged, so not sent
    }

    refused = await client.post(url, data={**shown, "price_points": "80", "ends_at": local(sale.ends_at)})
    assert refused.status == 400
    text = await refused.text()
    assert field_error(text, "price_points") == "秒杀已开始，积分价不能再修改"
    assert 'name="price_points" value="80"' in text  # what was typed is kept
    assert (await FlashSale.get(id=sale.id)).price_points == 100

    later = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=3)
    saved = await client.post(
        url, data={**shown, "stock": "7", "ends_at": local(later)}, allow_redirects=False
    )
    assert saved.status == 303, await saved.text()
    row = await FlashSale.get(id=sale.id)
    assert (row.stock, row.ends_at, row.price_points) == (7, later, 100)
    assert "已保存" in await (await client.get(saved.headers["Location"])).text()

    # A manager sees the terms but no form to change them, and cannot post one.
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)}, allow_redirects=False)
    assert (await login(client, "shop", "mona")).status == 303
    html = await (await client.get(url)).text()
    assert "立即结束" not in html and ">保存<" not in html
    manager_token = await page_csrf(client, url)
    denied = await client.post(f"{url}/end", data={"csrf_token": manager_token})
    assert denied.status == 403 and (await FlashSale.get(id=sale.id)).ends_at == later


async def test_ending_a_sale_from_the_mall_list(client: TestClient, shop: Merchant) -> None:
    sale = await running_sale(shop)
    html = await (await client.get("/admin/mall")).text()
    assert f'action="/admin/mall/flash-sales/{sale.id}/end"' in html
    token = await page_csrf(client, "/admin/mall")
    ended = await client.post(
        f"/admin/mall/flash-sales/{sale.id}/end",
        data={"csrf_token": token, "back": "list"},
        allow_redirects=False,
    )
    assert ended.status == 303 and ended.headers["Location"] == "/admin/mall?done=ended"
    assert (await FlashSale.get(id=sale.id)).ends_at <= datetime.now(UTC)
    html = await (await client.get("/admin/mall?done=ended")).text()
    assert "活动已立即结束" in html and f'action="/admin/mall/flash-sales/{sale.id}/end"' not in html
    again = await client.post(
        f"/admin/mall/flash-sales/{sale.id}/end", data={"csrf_token": token, "back": "list"}
    )
    assert (
        again.status == 400 and field_error(await again.text(), f"end-flash-sales-{sale.id}") == "秒杀已结束"
    )


async def test_a_group_deal_is_edited_before_its_start_and_ended(client: TestClient, shop: Merchant) -> None:
    item = await make_item(shop)
    now = datetime.now(UTC)
    starts = (now + timedelta(days=1)).replace(second=0, microsecond=0)
    spec = groups.DealSpec(item.id, 200, 3, 24, starts, starts + timedelta(days=2))
    deal = await groups.create_deal(shop.id, spec, now=now, actor="test")
    url = f"/admin/mall/group-deals/{deal.id}"
    token = await page_csrf(client, url)
    form = {
        "csrf_token": token,
        "price_points": "200",
        "group_size": "3",
        "hours": "24",
        "starts_at": local(starts),
        "ends_at": local(starts + timedelta(days=2)),
    }
    refused = await client.post(url, data={**form, "group_size": "1"})
    assert refused.status == 400 and field_error(await refused.text(), "group_size")
    assert (await GroupDeal.get(id=deal.id)).group_size == 3
    backwards = await client.post(url, data={**form, "ends_at": local(starts - timedelta(hours=1))})
    assert field_error(await backwards.text(), "ends_at") == "结束时间须晚于开始时间"
    saved = await client.post(
        url, data={**form, "price_points": "150", "group_size": "2"}, allow_redirects=False
    )
    assert saved.status == 303, await saved.text()
    row = await GroupDeal.get(id=deal.id)
    assert (row.price_points, row.group_size, row.hours, row.starts_at) == (150, 2, 24, starts)

    ended = await client.post(f"{url}/end", data={"csrf_token": token}, allow_redirects=False)
    assert ended.status == 303 and ended.headers["Location"] == f"{url}?done=ended"
    html = await (await client.get(ended.headers["Location"])).text()
    assert "已立即结束" in html and "已结束" in html and 'id="deal-end"' not in html
    assert not (await GroupDeal.get(id=deal.id)).active
    assert not await DealGroup.filter(deal_id=deal.id, status=GroupStatus.OPEN).exists()


def journey_form(token: str, **fields: str) -> dict[str, str]:
    return {
        "csrf_token": token,
        "name": "新会员关怀",
        "trigger": "days_after_registration",
        "days": "3",
        "channel": "custom",
        "text": "{{ member_name }}，欢迎加入",
        "holdout_pct": "10",
        "throttle_per_second": "50",
        "attach_points": "0",
        "conversion_days": "7",
        **fields,
    }


async def test_a_journeys_edit_page(client: TestClient, shop: Merchant) -> None:
    message = Draft(name="新会员关怀", channel="custom", content={"text": "{{ member_name }}，欢迎加入"})
    journey = await journeys.create(
        shop, JourneyDraft("新会员关怀", "days_after_registration", 3, None, message), actor="test"
    )
    url = f"/admin/journeys/{journey.id}"
    assert f'href="{url}"' in await (await client.get("/admin/journeys")).text()
    html = await (await client.get(url)).text()
    assert 'name="days" value="3"' in html and "{{ member_name }}，欢迎加入</textarea>" in html
    token = await page_csrf(client, url)

    refused = await client.post(url, data=journey_form(token, days="400", text="改过的问候"))
    assert refused.status == 400
    text = await refused.text()
    assert field_error(text, "days") and "改过的问候</textarea>" in text
    assert (await Journey.get(id=journey.id)).days == 3

    saved = await client.post(
        url, data=journey_form(token, days="5", text="{{ member_name }}，好久不见"), allow_redirects=False
    )
    assert saved.status == 303, await saved.text()
    assert "旅程已保存" in await (await client.get(saved.headers["Location"])).text()
    assert (await Journey.get(id=journey.id)).days == 5
    assert (await Campaign.get(id=journey.campaign_id)).content == {"text": "{{ member_name }}，好久不见"}
