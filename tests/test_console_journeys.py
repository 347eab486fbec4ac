"""Console pages of journeys and of the marketing caps over HTTP: create (errors next to the field, input
kept), switch on and off, delete one that is off, the counts; the caps shown and edited, an admin's
only."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient

from handlers.campaigns import journeys
from models.campaign import Journey, MarketingCaps
from models.merchant import Merchant
from tests.support.console import login, make_staff, page_csrf
from tests.support.factories import make_member, make_merchant
from webhooks.appkeys import BACKGROUND, EFFECTS


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    await make_member(merchant, "o-j0", name="会员0")
    assert (await login(client, "shop", "alice")).status == 303
    return merchant


def field_error(html: str, field: str) -> str:
    found = re.search(rf'data-field="{re.escape(field)}">([^<]*)<', html)
    assert found, f"no error next to {field}"
    return found.group(1)


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


async def test_a_journey_is_created_switched_on_and_off(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/journeys")
    made = await client.post("/admin/journeys", data=journey_form(token), allow_redirects=False)
    assert made.status == 303, await made.text()
    journey = await Journey.get(merchant_id=shop.id)
    assert (journey.name, journey.trigger.value, journey.days, journey.active) == (
        "新会员关怀",
        "days_after_registration",
        3,
        False,
    )
    html = await (await client.get("/admin/journeys")).text()
    assert "注册 3 天后" in html and 'data-value="active">未启用<' in html
    on = await client.post(
        f"/admin/journeys/{journey.id}/activate", data={"csrf_token": token}, allow_redirects=False
    )
    assert on.status == 303, await on.text()
    assert (await Journey.get(id=journey.id)).active
    html = await (await client.get("/admin/journeys")).text()
    assert 'data-value="active">已启用<' in html and 'data-count="sent">0<' in html
    again = await client.post(f"/admin/journeys/{journey.id}/activate", data={"csrf_token": token})
    assert (
        again.status == 400
        and field_error(await again.text(), f"journey-{journey.id}") == "旅程已经是这个状态"
    )
    # A member registering now is due (N = 0: the day itself): the journey's counts move.
    await Journey.filter(id=journey.id).update(days=0)
    await make_member(shop, "o-new", name="新人")
    assert await journeys.tick(client.app[EFFECTS], datetime.now(UTC)) == 1
    await client.app[BACKGROUND].drain()
    await client.app[EFFECTS].run_due(datetime.now(UTC))
    row = await (await client.get("/admin/journeys")).text()
    counts = {name: int(n) for name, n in re.findall(r'data-count="(\w+)">(\d+)<', row)}
    assert sum(counts.values()) == 1 and counts["sent"] == 0  # no 48-hour window: skipped or held out
    off = await client.post(
        f"/admin/journeys/{journey.id}/deactivate", data={"csrf_token": token}, allow_redirects=False
    )
    assert off.status == 303 and not (await Journey.get(id=journey.id)).active


async def test_a_refused_journey_keeps_the_input_and_says_why(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/journeys")
    no_segment = await client.post("/admin/journeys", data=journey_form(token, trigger="enters_segment"))
    html = await no_segment.text()
    assert no_segment.status == 400 and "须指定分群" in field_error(html, "segment_id")
    assert 'value="新会员关怀"' in html and ">{{ member_name }}，欢迎加入</textarea>" in html
    too_far = await client.post("/admin/journeys", data=journey_form(token, days="400"))
    assert too_far.status == 400 and field_error(await too_far.text(), "days")
    bad_holdout = await client.post("/admin/journeys", data=journey_form(token, holdout_pct="90"))
    assert bad_holdout.status == 400 and field_error(await bad_holdout.text(), "holdout_pct")
    subscribe = await client.post(
        "/admin/journeys",
        data=journey_form(token, channel="subscribe", template_id="TPL", kw0="thing1", kv0=""),
    )
    assert field_error(await subscribe.text(), "kv0") == "请填写关键词 thing1 的内容"
    assert await Journey.filter(merchant_id=shop.id).count() == 0


async def test_a_journey_that_is_off_is_deleted_from_the_list(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/journeys")
    await client.post("/admin/journeys", data=journey_form(token), allow_redirects=False)
    journey = await Journey.get(merchant_id=shop.id)
    url = f"/admin/journeys/{journey.id}"
    await client.post(f"{url}/activate", data={"csrf_token": token}, allow_redirects=False)
    html = await (await client.get("/admin/journeys")).text()
    assert f'action="{url}/delete"' not in html  # on: no delete button
    refused = await client.post(f"{url}/delete", data={"csrf_token": token})
    assert refused.status == 400
    assert field_error(await refused.text(), f"journey-{journey.id}") == "旅程启用中，请先停用再删除"
    assert await Journey.filter(id=journey.id).exists()

    await client.post(f"{url}/deactivate", data={"csrf_token": token}, allow_redirects=False)
    html = await (await client.get("/admin/journeys")).text()
    assert f'action="{url}/delete"' in html and "确定删除旅程「新会员关怀」" in html
    deleted = await client.post(f"{url}/delete", data={"csrf_token": token}, allow_redirects=False)
    assert deleted.status == 303, await deleted.text()
    assert not await Journey.filter(id=journey.id).exists()
    html = await (await client.get(deleted.headers["Location"])).text()
    assert "旅程已删除" in html and "还没有旅程。" in html


async def test_a_manager_sees_journeys_but_cannot_switch_them_on(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/journeys")
    await client.post("/admin/journeys", data=journey_form(token), allow_redirects=False)
    journey = await Journey.get(merchant_id=shop.id)
    client.session.cookie_jar.clear()
    assert (await login(client, "shop", "mona")).status == 303
    token = await page_csrf(client, "/admin/journeys")
    refused = await client.post(f"/admin/journeys/{journey.id}/activate", data={"csrf_token": token})
    assert refused.status == 403 and not (await Journey.get(id=journey.id)).active
    refused = await client.post(f"/admin/journeys/{journey.id}/delete", data={"csrf_token": token})
    assert refused.status == 403 and await Journey.filter(id=journey.id).exists()


async def test_a_manager_edits_a_journey_that_is_off_but_not_one_that_is_on(
    client: TestClient, shop: Merchant
) -> None:
    token = await page_csrf(client, "/admin/journeys")
    await client.post("/admin/journeys", data=journey_form(token), allow_redirects=False)
    journey = await Journey.get(merchant_id=shop.id)
    url = f"/admin/journeys/{journey.id}"
    client.session.cookie_jar.clear()
    assert (await login(client, "shop", "mona")).status == 303
    token = await page_csrf(client, url)
    assert ">保存</button>" in await (await client.get(url)).text()
    saved = await client.post(url, data=journey_form(token, days="5"), allow_redirects=False)
    assert saved.status == 303, await saved.text()
    assert (await Journey.get(id=journey.id)).days == 5

    await journeys.set_active(shop, journey.id, True, actor="test", now=datetime.now(UTC))
    html = await (await client.get(url)).text()
    assert "旅程启用中，只有管理员可以修改。" in html and ">保存</button>" not in html
    refused = await client.post(url, data=journey_form(token, days="9"))
    assert refused.status == 400
    assert "请管理员修改或先停用" in await refused.text()  # the API's refusal, shown on the form
    assert (await Journey.get(id=journey.id)).days == 5


async def test_the_marketing_caps_are_shown_and_edited(client: TestClient, shop: Merchant) -> None:
    html = await (await client.get("/admin/marketing-caps")).text()
    assert 'name="marketing_per_day" value="1"' in html and 'name="sms_per_day" value="1"' in html
    assert "每月最多 4 条" in html and "22:00 – 08:00" in html
    token = await page_csrf(client, "/admin/marketing-caps")
    refused = await client.post(
        "/admin/marketing-caps", data={"csrf_token": token, "marketing_per_day": "11", "sms_per_day": "二"}
    )
    html = await refused.text()
    assert refused.status == 400
    assert field_error(html, "marketing_per_day") and field_error(html, "sms_per_day")
    assert 'name="marketing_per_day" value="11"' in html and 'name="sms_per_day" value="二"' in html
    assert not await MarketingCaps.exists(merchant_id=shop.id)
    saved = await client.post(
        "/admin/marketing-caps",
        data={"csrf_token": token, "marketing_per_day": "3", "sms_per_day": "2"},
        allow_redirects=False,
    )
    assert saved.status == 303
    caps = await MarketingCaps.get(merchant_id=shop.id)
    assert (caps.marketing_per_day, caps.sms_per_day) == (3, 2)
    assert 'name="marketing_per_day" value="3"' in await (await client.get(saved.headers["Location"])).text()
    client.session.cookie_jar.clear()
    assert (await login(client, "shop", "mona")).status == 303
    token = await page_csrf(client, "/admin/marketing-caps")
    manager = await client.post(
        "/admin/marketing-caps", data={"csrf_token": token, "marketing_per_day": "5", "sms_per_day": "5"}
    )
    assert manager.status == 403 and (await MarketingCaps.get(merchant_id=shop.id)).marketing_per_day == 3


async def test_a_journey_for_members_entering_a_segment(client: TestClient, shop: Merchant) -> None:
    from handlers.segments.catalogue import create_segment

    segment = await create_segment(
        shop.id, "沉睡会员", {"attr": "gender", "op": "eq", "value": "female"}, actor="t"
    )
    token = await page_csrf(client, "/admin/journeys")
    form = journey_form(token, name="唤醒", trigger="enters_segment", segment_id=str(segment.id), days="0")
    made = await client.post("/admin/journeys", data=form, allow_redirects=False)
    assert made.status == 303, await made.text()
    journey = await Journey.get(merchant_id=shop.id)
    assert (journey.trigger.value, journey.segment_id) == ("enters_segment", segment.id)
    html = await (await client.get("/admin/journeys")).text()
    assert "进入人群「沉睡会员」" in html
