"""One segment's console page: its builder filled with the saved conditions (or the advanced JSON when
the rows cannot hold them), changing it through the segments API, and deleting it after a confirmation
— refused, with what uses it named, while a live campaign or a journey reads it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.segments import catalogue
from models.campaign import Campaign, CampaignChannel, CampaignState, Journey, JourneyTrigger
from models.loyalty import AuditLog
from models.merchant import Merchant
from models.tag import Segment
from tests.support.console import login, make_staff, page_csrf
from tests.support.factories import make_member, make_merchant
from webhooks.console.segments import builder_values, expression


@pytest.fixture
async def shop(client: TestClient) -> tuple[Merchant, Segment]:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    for key, gender in (("a", "female"), ("b", "female"), ("c", "male")):
        await make_member(merchant, f"o-{key}", name=f"会员{key}", gender=gender)
    women = {"and": [{"attr": "gender", "op": "in", "value": ["female"]}]}
    segment = await catalogue.create_segment(merchant.id, "女性会员", women, actor="test")
    assert (await login(client, "shop", "alice")).status == 303
    return merchant, segment


def edit(**fields: str) -> dict[str, str]:
    return {"name": "女性会员", "mode": "and", "advanced": "", **fields}


async def test_the_edit_page_is_filled_with_the_saved_conditions(
    client: TestClient, shop: tuple[Merchant, Segment]
) -> None:
    _, segment = shop
    listed = await (await client.get("/admin/segments")).text()
    assert f'href="/admin/segments/{segment.id}"' in listed
    html = await (await client.get(f"/admin/segments/{segment.id}")).text()
    assert 'value="女性会员"' in html
    assert '<option value="gender" selected>' in html and 'name="c0_value" value="female"' in html
    assert 'hx-post="/admin/segments/preview"' in html and 'data-confirm="确定删除人群「女性会员」？"' in html
    assert (await client.get("/admin/segments/999999")).status == 404


async def test_a_segment_is_changed_and_its_audience_follows(
    client: TestClient, shop: tuple[Merchant, Segment]
) -> None:
    merchant, segment = shop
    token = await page_csrf(client, f"/admin/segments/{segment.id}")
    men = edit(name="男性会员", c0_field="gender", c0_op="in", c0_value="male")
    preview = await client.post(
        "/admin/segments/preview", data=men, headers={"X-CSRF-Token": token, "HX-Request": "true"}
    )
    assert 'data-value="audience">1<' in await preview.text()
    saved = await client.post(
        f"/admin/segments/{segment.id}", data={**men, "csrf_token": token}, allow_redirects=False
    )
    assert saved.status == 303, await saved.text()
    await segment.refresh_from_db()
    assert segment.name == "男性会员"
    assert segment.expression == {"and": [{"attr": "gender", "op": "in", "value": ["male"]}]}
    assert await AuditLog.filter(merchant_id=merchant.id, action="segment.update").exists()


async def test_a_refused_change_keeps_what_was_typed_and_changes_nothing(
    client: TestClient, shop: tuple[Merchant, Segment]
) -> None:
    merchant, segment = shop
    await catalogue.create_segment(
        merchant.id, "全部", {"attr": "blocked", "op": "eq", "value": False}, actor="t"
    )
    token = await page_csrf(client, f"/admin/segments/{segment.id}")
    action = f"/admin/segments/{segment.id}"
    taken = await client.post(
        action,
        data={**edit(name="全部", c0_field="points", c0_op="gte", c0_value="5")} | {"csrf_token": token},
    )
    assert taken.status == 400
    html = await taken.text()
    assert 'data-field="name"' in html and "已存在" in html and 'name="c0_value" value="5"' in html
    bad = await client.post(
        action, data=edit(c0_field="points", c0_op="gte", c0_value="很多") | {"csrf_token": token}
    )
    assert bad.status == 400
    html = await bad.text()
    assert 'data-field="form"' in html and 'value="很多"' in html
    await segment.refresh_from_db()
    assert (segment.name, segment.expression["and"][0]["value"]) == ("女性会员", ["female"])


async def test_deleting_is_refused_while_a_live_campaign_or_journey_uses_it(
    client: TestClient, shop: tuple[Merchant, Segment]
) -> None:
    merchant, segment = shop
    campaign = await Campaign.create(
        merchant_id=merchant.id,
        name="周末会员日",
        channel=CampaignChannel.SMS,
        segment_id=segment.id,
        state=CampaignState.SCHEDULED,
    )
    token = await page_csrf(client, f"/admin/segments/{segment.id}")
    action = f"/admin/segments/{segment.id}/delete"
    refused = await client.post(action, data={"csrf_token": token})
    assert refused.status == 400
    html = await refused.text()
    assert 'data-field="delete"' in html and "营销活动「周末会员日」" in html
    assert await Segment.exists(id=segment.id)
    campaign.state = CampaignState.DONE
    await campaign.save()
    journey = await Journey.create(
        merchant_id=merchant.id,
        name="新客欢迎",
        trigger=JourneyTrigger.ENTERS_SEGMENT,
        segment_id=segment.id,
        campaign_id=campaign.id,
    )
    still = await client.post(action, data={"csrf_token": token})
    assert still.status == 400 and "自动化旅程「新客欢迎」" in await still.text()
    assert await Segment.exists(id=segment.id)
    await journey.delete()
    deleted = await client.post(action, data={"csrf_token": token}, allow_redirects=False)
    assert deleted.status == 303 and deleted.headers["Location"] == "/admin/segments?deleted=1"
    assert not await Segment.exists(id=segment.id)
    assert await AuditLog.filter(merchant_id=merchant.id, action="segment.delete").exists()
    assert "人群已删除" in await (await client.get("/admin/segments?deleted=1")).text()


async def test_the_api_refuses_deleting_a_segment_in_use(
    client: TestClient, shop: tuple[Merchant, Segment]
) -> None:
    merchant, segment = shop
    await Campaign.create(
        merchant_id=merchant.id, name="草稿", channel=CampaignChannel.SMS, segment_id=segment.id
    )
    with pytest.raises(Exception, match="正被使用"):
        await catalogue.delete_segment(merchant.id, segment.id, actor="test")
    assert await Segment.exists(id=segment.id)


async def test_a_manager_edits_but_does_not_delete(
    client: TestClient, shop: tuple[Merchant, Segment]
) -> None:
    _, segment = shop
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "mona")).status == 303
    html = await (await client.get(f"/admin/segments/{segment.id}")).text()
    assert 'id="segment-edit"' in html and 'id="segment-delete"' not in html
    token = await page_csrf(client, f"/admin/segments/{segment.id}")
    assert (
        await client.post(f"/admin/segments/{segment.id}/delete", data={"csrf_token": token})
    ).status == 403
    assert await Segment.exists(id=segment.id)


@pytest.mark.parametrize(
    ("saved", "rows"),
    [
        (
            {"or": [{"tag": 7}, {"not": {"tag": 8}}]},
            {"mode": "or", "c0_field": "tag:7", "c0_op": "has", "c1_field": "tag:8", "c1_op": "not"},
        ),
        (
            {"and": [{"attr": "lifetime_spend_fen", "op": "between", "value": [10_000, 250_050]}]},
            {
                "mode": "and",
                "c0_field": "lifetime_spend_fen",
                "c0_op": "between",
                "c0_value": "100.00，2500.50",
            },
        ),
        (
            {
                "and": [
                    {"attr": "subscribed", "op": "eq", "value": True},
                    {"attr": "birthday_month", "op": "in", "value": [1, 2]},
                ]
            },
            {"c0_field": "subscribed", "c0_value": "是", "c1_field": "birthday_month", "c1_value": "1，2"},
        ),
    ],
)
def test_a_saved_expression_goes_back_into_the_rows_and_round_trips(
    saved: dict[str, Any], rows: dict[str, str]
) -> None:
    values = builder_values(saved)
    assert values.items() >= rows.items() and values["advanced"] == ""
    assert expression(values) == saved


@pytest.mark.parametrize(
    "saved",
    [
        {"attr": "gender", "op": "eq", "value": "male"},
        {"and": [{"or": [{"tag": 1}, {"tag": 2}]}]},
        {"and": [{"attr": "source", "op": "in", "value": ["import"]}]},
        {"and": [{"tag": n} for n in range(1, 6)]},
        {"and": [{"attr": "tier", "op": "in", "value": ["gold vip"]}]},  # the rows would split it
    ],
)
def test_what_the_rows_cannot_hold_is_shown_as_json(saved: dict[str, Any]) -> None:
    values = builder_values(saved)
    assert json.loads(values["advanced"]) == saved
    assert expression(values) == saved
