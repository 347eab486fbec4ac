"""Console pages of campaigns over HTTP: a draft from the form with each channel's fields (errors kept
next to the field, nothing saved when refused), the channel fragment htmx swaps in, editing a draft,
its preview and check, starting it now or at a time, the progress reaching 100% and the report with the
holdout; CSRF-less posts refused."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.segments.catalogue import create_segment
from models.campaign import Campaign, CampaignState
from models.member import Member
from models.merchant import Merchant
from tests.support.console import login, make_staff, page_csrf
from tests.support.factories import make_member, make_merchant
from webhooks.appkeys import BACKGROUND, EFFECTS
from webhooks.console.base import CSRF_REFUSED


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    for n in range(4):
        await make_member(merchant, f"o-c{n}", name=f"会员{n}")
    assert (await login(client, "shop", "alice")).status == 303
    return merchant


def common(token: str, **fields: str) -> dict[str, str]:
    return {
        "csrf_token": token,
        "name": "周末活动",
        "holdout_pct": "0",
        "throttle_per_second": "50",
        "attach_points": "0",
        "conversion_days": "7",
        **fields,
    }


def field_error(html: str, field: str) -> str:
    found = re.search(rf'data-field="{re.escape(field)}">([^<]*)<', html)
    assert found, f"no error next to {field}"
    return found.group(1)


async def test_a_campaign_from_draft_to_its_report(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/campaigns")
    draft = common(token, channel="custom", text="{{ member_name }}，周末见")
    bad = await client.post("/admin/campaigns", data={**draft, "holdout_pct": "80"})
    assert bad.status == 400
    text = await bad.text()
    assert 'data-field="holdout_pct"' in text and 'value="周末活动"' in text
    made = await client.post("/admin/campaigns", data=draft, allow_redirects=False)
    assert made.status == 303, await made.text()
    location = made.headers["Location"].partition("?")[0]
    html = await (await client.get(location)).text()
    assert 'data-value="audience">4<' in html and "，周末见" in html
    checked = await client.post(f"{location}/validate", data={"csrf_token": token}, allow_redirects=False)
    assert checked.status == 303, await checked.text()
    started = await client.post(f"{location}/start", data={"csrf_token": token}, allow_redirects=False)
    assert started.status == 303, await started.text()
    await client.app[BACKGROUND].drain()
    for _ in range(200):  # the worker's part, run here as the import tests do
        await client.app[EFFECTS].run_due(datetime.now(UTC))
        fragment = await (await client.get(location, headers={"HX-Request": "true"})).text()
        if 'data-percent="100"' in fragment:
            break
        await asyncio.sleep(0.05)
    assert 'data-percent="100"' in fragment, fragment
    assert "<html" not in fragment  # htmx polls the progress fragment only
    for _ in range(100):  # the last task marks it done
        if (await Campaign.get(merchant_id=shop.id)).state == CampaignState.DONE:
            break
        await client.app[BACKGROUND].drain()
        await client.app[EFFECTS].run_due(datetime.now(UTC))
        await asyncio.sleep(0.05)
    # The page polling since "sending" reloads once the state moved on (its actions change with it).
    changed = await client.get(f"{location}?seen=sending", headers={"HX-Request": "true"})
    assert changed.status == 204 and changed.headers["HX-Refresh"] == "true"
    same = await client.get(f"{location}?seen=done", headers={"HX-Request": "true"})
    assert same.status == 200 and 'data-state="done"' in await same.text()
    page = await (await client.get(location)).text()
    assert "转化提升" in page and f'href="{location}/recipients.csv"' in page
    export = await client.get(f"{location}/recipients.csv")
    assert export.status == 200 and export.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO((await export.read()).decode("utf-8-sig"))))
    assert sorted(r["member_code"] for r in rows) == sorted(
        m.code for m in await Member.filter(merchant_id=shop.id)
    )
    assert {r["status"] for r in rows} <= {"sent", "failed", "skipped"}  # WeChat unreachable here: failed
    campaign = await Campaign.get(merchant_id=shop.id)
    assert re.search(r'data-state="(done|sending)"', page) and campaign.name == "周末活动"


async def test_the_channel_select_swaps_in_that_channels_fields(client: TestClient, shop: Merchant) -> None:
    subscribe = await client.get(
        "/admin/campaigns/fields", params={"channel": "subscribe", "kw0": "thing1", "kv0": "你好"}
    )
    html = await subscribe.text()
    assert subscribe.status == 200 and "<html" not in html
    assert 'data-channel="subscribe"' in html and 'name="template_id"' in html
    assert 'name="kw0" value="thing1"' in html and 'name="kv0" value="你好"' in html
    assert 'name="text"' not in html
    sms = await (await client.get("/admin/campaigns/fields", params={"channel": "sms"})).text()
    assert 'data-channel="sms"' in sms and 'name="p0"' in sms and 'name="kw0"' not in sms
    custom = await (
        await client.get("/admin/campaigns/fields", params={"channel": "custom", "text": "留着"})
    ).text()
    assert 'data-channel="custom"' in custom and ">留着</textarea>" in custom
    assert 'name="wechat_tag"' not in custom  # the tag is mass send's only
    carried = {"channel": "sms", "shown": "subscribe", "template_id": "TPL-PROMO"}
    switched = await (await client.get("/admin/campaigns/fields", params=carried)).text()
    assert 'name="template_id" value=""' in switched  # another channel's template id is not carried over
    kept = await (await client.get("/admin/campaigns/fields", params={**carried, "shown": "sms"})).text()
    assert 'name="template_id" value="TPL-PROMO"' in kept
    mass = await (await client.get("/admin/campaigns/fields", params={"channel": "template"})).text()
    assert 'data-channel="mass"' in mass and 'name="wechat_tag"' in mass  # no template-message channel


async def test_a_subscribe_message_too_long_for_its_keyword_is_refused_next_to_it(
    client: TestClient, shop: Merchant
) -> None:
    token = await page_csrf(client, "/admin/campaigns")
    form = common(
        token,
        channel="subscribe",
        template_id="TPL-PROMO",
        page="pages/index/index",
        kw0="thing1",
        kv0="{{ member_name }}，本周末全场会员专享九折优惠，欢迎光临门店选购",
        kw1="time2",
        kv1="12月24日",
    )
    refused = await client.post("/admin/campaigns", data=form)
    html = await refused.text()
    assert refused.status == 400
    assert field_error(html, "kv0") == "关键词 thing1 的内容超过 20 个字"
    assert 'value="{{ member_name }}，本周末全场会员专享九折优惠，欢迎光临门店选购"' in html
    assert 'name="template_id" value="TPL-PROMO"' in html and 'data-channel="subscribe"' in html
    assert await Campaign.filter(merchant_id=shop.id).count() == 0  # nothing saved
    missing = await client.post("/admin/campaigns", data={**form, "kv0": "", "kw1": "", "kv1": ""})
    assert field_error(await missing.text(), "kv0") == "请填写关键词 thing1 的内容"
    bad_keyword = await client.post("/admin/campaigns", data={**form, "kw0": "title", "kv0": "会员日"})
    assert field_error(await bad_keyword.text(), "kv0") == "关键词 title 应形如 thing1、amount2、time3"
    made = await client.post(
        "/admin/campaigns", data={**form, "kv0": "{{ member_name }}，会员日"}, allow_redirects=False
    )
    assert made.status == 303, await made.text()
    campaign = await Campaign.get(merchant_id=shop.id)
    assert campaign.content == {
        "fields": {"thing1": "{{ member_name }}，会员日", "time2": "12月24日"},
        "page": "pages/index/index",
    }
    assert campaign.template_id == "TPL-PROMO" and campaign.validated_at is not None
    html = await (await client.get(f"/admin/campaigns/{campaign.id}")).text()
    assert 'data-preview-field="thing1">会员0，会员日<' in html
    assert 'value="time2"' in html and 'value="thing1"' in html  # the draft's form shows what was saved


async def test_an_sms_campaign_names_the_parameter_that_does_not_fit(
    client: TestClient, shop: Merchant
) -> None:
    token = await page_csrf(client, "/admin/campaigns")
    form = common(
        token, channel="sms", template_id="1400123", p0="{{ member_name }}", p1="周末全场会员专享九折优惠活动"
    )
    refused = await client.post("/admin/campaigns", data=form)
    html = await refused.text()
    assert refused.status == 400 and field_error(html, "p1") == "第 2 个短信参数超过 12 个字"
    assert 'name="p1" value="周末全场会员专享九折优惠活动"' in html
    not_numeric = await client.post("/admin/campaigns", data={**form, "template_id": "SMS_1", "p1": "九折"})
    assert field_error(await not_numeric.text(), "template_id") == "短信须指定已审核的短信模板 ID（数字）"
    no_params = await client.post("/admin/campaigns", data={**form, "p0": "", "p1": ""})
    assert field_error(await no_params.text(), "p0") == "请填写短信模板的参数（至少一个）"
    assert await Campaign.filter(merchant_id=shop.id).count() == 0
    made = await client.post("/admin/campaigns", data={**form, "p1": "九折"}, allow_redirects=False)
    assert made.status == 303, await made.text()
    assert (await Campaign.get(merchant_id=shop.id)).content == {"params": ["{{ member_name }}", "九折"]}


async def test_a_mass_send_to_a_tag_needs_a_synced_segment(client: TestClient, shop: Merchant) -> None:
    segment = await create_segment(
        shop.id, "全部", {"attr": "gender", "op": "eq", "value": "female"}, actor="t"
    )
    token = await page_csrf(client, "/admin/campaigns")
    form = common(
        token, channel="mass", text="{{ merchant_name }} 会员日", segment_id=str(segment.id), wechat_tag="1"
    )
    refused = await client.post("/admin/campaigns", data=form)
    assert refused.status == 400
    assert "还没有同步到微信标签" in field_error(await refused.text(), "wechat_tag")
    from models.tag import Segment

    await Segment.filter(id=segment.id).update(wechat_tag_id=101)
    made = await client.post("/admin/campaigns", data=form, allow_redirects=False)
    assert made.status == 303, await made.text()
    assert (await Campaign.get(merchant_id=shop.id)).content == {
        "text": "{{ merchant_name }} 会员日",
        "wechat_tag_id": 101,
    }


async def test_editing_a_draft_keeps_the_old_version_when_refused(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/campaigns")
    made = await client.post(
        "/admin/campaigns", data=common(token, channel="custom", text="你好"), allow_redirects=False
    )
    location = made.headers["Location"].partition("?")[0]
    refused = await client.post(location, data=common(token, channel="custom", text="{{ nobody }}好"))
    html = await refused.text()
    assert refused.status == 400 and "使用了不存在的变量" in field_error(html, "text")
    assert ">{{ nobody }}好</textarea>" in html
    assert (await Campaign.get(merchant_id=shop.id)).content == {"text": "你好"}
    saved = await client.post(
        location,
        data=common(token, channel="custom", text="{{ member_name }}好", holdout_pct="20"),
        allow_redirects=False,
    )
    assert saved.status == 303, await saved.text()
    campaign = await Campaign.get(merchant_id=shop.id)
    assert (campaign.content, campaign.holdout_pct) == ({"text": "{{ member_name }}好"}, 20)


async def test_a_draft_scheduled_for_a_time_in_the_merchants_zone(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/campaigns")
    made = await client.post(
        "/admin/campaigns", data=common(token, channel="custom", text="你好"), allow_redirects=False
    )
    location = made.headers["Location"].partition("?")[0]
    bad = await client.post(f"{location}/start", data={"csrf_token": token, "at": "明天上午"})
    html = await bad.text()
    assert bad.status == 400 and field_error(html, "at") == "请填写发送时间，如 2026-12-24 10:00"
    assert 'name="at" value="明天上午"' in html
    scheduled = await client.post(
        f"{location}/start", data={"csrf_token": token, "at": "2030-01-01T10:00"}, allow_redirects=False
    )
    assert scheduled.status == 303, await scheduled.text()
    campaign = await Campaign.get(merchant_id=shop.id)
    assert campaign.state == CampaignState.SCHEDULED
    assert campaign.scheduled_at == datetime(2030, 1, 1, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai


async def test_a_test_send_without_a_recipient_says_so_next_to_the_field(
    client: TestClient, shop: Merchant
) -> None:
    token = await page_csrf(client, "/admin/campaigns")
    made = await client.post(
        "/admin/campaigns", data=common(token, channel="custom", text="你好"), allow_redirects=False
    )
    location = made.headers["Location"].partition("?")[0]
    refused = await client.post(f"{location}/test-send", data={"csrf_token": token, "to": "  "})
    assert refused.status == 400
    assert field_error(await refused.text(), "to")


@pytest.mark.parametrize(
    "path",
    ["/admin/campaigns", "/admin/journeys", "/admin/marketing-caps"],
)
async def test_a_post_without_the_csrf_token_is_refused(
    client: TestClient, shop: Merchant, path: str
) -> None:
    data: dict[str, Any] = common(
        "", channel="custom", text="你好", trigger="days_after_registration", days="1"
    )
    data.pop("csrf_token")
    data.update(marketing_per_day="5", sms_per_day="5")
    refused = await client.post(path, data=data)
    assert refused.status == 403 and CSRF_REFUSED in await refused.text()
    assert await Campaign.filter(merchant_id=shop.id).count() == 0
    caps = await (await client.get("/admin/marketing-caps")).text()
    assert 'name="marketing_per_day" value="1"' in caps


async def test_an_attached_coupon_and_points_are_saved_and_checked(
    client: TestClient, shop: Merchant
) -> None:
    from models.coupon import CouponKind, CouponTemplate

    template = await CouponTemplate.create(
        merchant_id=shop.id,
        name="满100减10",
        kind=CouponKind.FIXED,
        threshold_fen=10_000,
        amount_off_fen=1_000,
    )
    html = await (await client.get("/admin/campaigns")).text()
    assert f'<option value="{template.id}" >满100减10</option>' in html
    token = await page_csrf(client, "/admin/campaigns")
    form = common(token, channel="custom", text="送你一张券", attach_coupon_template_id=str(template.id))
    too_many = await client.post("/admin/campaigns", data={**form, "attach_points": "100001"})
    html = await too_many.text()
    assert too_many.status == 400 and field_error(html, "attach_points")
    assert f'<option value="{template.id}" selected>满100减10</option>' in html  # the choice is kept
    unknown = await client.post("/admin/campaigns", data={**form, "attach_coupon_template_id": "999999"})
    assert field_error(await unknown.text(), "attach_coupon_template_id") == "没有这个优惠券模板"
    made = await client.post("/admin/campaigns", data={**form, "attach_points": "50"}, allow_redirects=False)
    assert made.status == 303, await made.text()
    campaign = await Campaign.get(merchant_id=shop.id)
    assert (campaign.attach_coupon_template_id, campaign.attach_points) == (template.id, 50)


async def test_a_sending_campaign_is_paused_resumed_and_cancelled(client: TestClient, shop: Merchant) -> None:
    token = await page_csrf(client, "/admin/campaigns")
    made = await client.post(
        "/admin/campaigns", data=common(token, channel="custom", text="你好"), allow_redirects=False
    )
    location = made.headers["Location"].partition("?")[0]
    started = await client.post(f"{location}/start", data={"csrf_token": token}, allow_redirects=False)
    assert started.status == 303, await started.text()
    html = await (await client.get(location)).text()
    assert 'data-state="sending"' in html and f'hx-get="{location}?seen=sending"' in html  # polled
    assert 'name="kw0"' not in html and "修改草稿" not in html  # no longer editable
    for action, state in (("pause", "paused"), ("resume", "sending"), ("cancel", "cancelled")):
        done = await client.post(f"{location}/{action}", data={"csrf_token": token}, allow_redirects=False)
        assert done.status == 303, await done.text()
        assert (await Campaign.get(merchant_id=shop.id)).state.value == state
    again = await client.post(f"{location}/cancel", data={"csrf_token": token})
    assert again.status == 400 and "活动已结束，不能取消" in await again.text()
    edit = await client.post(location, data=common(token, channel="custom", text="再改"))
    assert edit.status == 400 and "只有草稿状态的活动可以修改" in await edit.text()


async def test_a_manager_prepares_a_draft_but_does_not_send_it(client: TestClient, shop: Merchant) -> None:
    client.session.cookie_jar.clear()
    assert (await login(client, "shop", "mona")).status == 303
    token = await page_csrf(client, "/admin/campaigns")
    made = await client.post(
        "/admin/campaigns", data=common(token, channel="custom", text="你好"), allow_redirects=False
    )
    assert made.status == 303, await made.text()
    location = made.headers["Location"].partition("?")[0]
    html = await (await client.get(location)).text()
    assert "立即发送" not in html and "测试发送" not in html
    for action in ("start", "test-send"):
        refused = await client.post(f"{location}/{action}", data={"csrf_token": token, "to": "o-staff"})
        assert refused.status == 403
    assert (await Campaign.get(merchant_id=shop.id)).state == CampaignState.DRAFT


async def test_a_draft_that_no_longer_fits_its_sample_member_says_where(
    client: TestClient, shop: Merchant
) -> None:
    token = await page_csrf(client, "/admin/campaigns")
    form = common(
        token, channel="subscribe", template_id="TPL-PROMO", kw0="thing1", kv0="{{ member_name }}，会员日"
    )
    made = await client.post("/admin/campaigns", data=form, allow_redirects=False)
    assert made.status == 303, await made.text()
    location = made.headers["Location"].partition("?")[0]
    await Member.filter(merchant_id=shop.id).update(
        name="一个名字非常非常非常非常非常长的会员"
    )  # the sample now
    checked = await client.post(f"{location}/validate", data={"csrf_token": token})
    html = await checked.text()
    assert checked.status == 400
    assert field_error(html, "kv0") == "关键词 thing1 的内容超过 20 个字"  # beside the content that grew
    assert 'name="kv0" value="{{ member_name }}，会员日"' in html
