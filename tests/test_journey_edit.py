"""Editing a journey: checked as on creation, a refused edit changes nothing, and a member already
messaged is never messaged again — whatever the edit changed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from handlers.campaigns import journeys, manage
from handlers.campaigns.journeys import JourneyDraft
from handlers.segments.catalogue import create_segment
from models.campaign import Campaign, CampaignRecipient, Journey, RecipientStatus
from models.loyalty import AuditLog
from models.member import Gender, Member
from models.merchant import Merchant
from models.tag import Segment
from tests.support.factories import staff_headers
from tests.support.wechat_sim import WeChatSim
from tests.test_campaigns import ACTOR, FIELDS, TEMPLATE, draft, drive, granted, shop
from webhooks.appkeys import EFFECTS


@pytest.fixture
async def started(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> Any:
    return await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))


def body(
    segment_id: int, *, name: str = "欢迎加入", text: str = "会员日到啦", **message: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": "enters_segment",
        "days": 0,
        "segment_id": segment_id,
        "message": {
            "name": name,
            "channel": "subscribe",
            "template_id": TEMPLATE,
            "content": {
                "fields": {**FIELDS, "thing1": "{{ member_name }}，" + text},
                "page": "pages/index/index",
            },
            "holdout_pct": 0,
            "throttle_per_second": 1000,
            **message,
        },
    }


def sent_texts(wechat_sim: WeChatSim) -> list[tuple[str, str]]:
    records = [r for r in wechat_sim.records("cgi-bin/message/subscribe/send") if r["errcode"] == 0]
    return [(r["body"]["touser"], r["body"]["data"]["thing1"]["value"]) for r in records]


async def women_journey(merchant: Merchant) -> tuple[Segment, Journey]:
    """The segment 女性会员 and a journey (switched off) for the members who enter it."""
    segment = await create_segment(
        merchant.id, "女性会员", {"attr": "gender", "op": "eq", "value": "female"}, actor=ACTOR
    )
    journey = await journeys.create(
        merchant, JourneyDraft("欢迎加入", "enters_segment", 0, segment.id, draft()), actor=ACTOR
    )
    return segment, journey


async def tick(started: Any, campaign_id: int) -> int:
    taken = (await journeys.campaigns_job(datetime.now(UTC), started.app[EFFECTS]))["journey_members"]
    await drive(started, campaign_id)
    return taken


async def test_an_edited_journey_never_messages_a_member_twice(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    await manage.set_caps(merchant, marketing_per_day=5, sms_per_day=1, actor=ACTOR)
    first, second, third = await granted(merchant, wechat_sim, 3)
    women, journey = await women_journey(merchant)
    men = await create_segment(
        merchant.id, "男性会员", {"attr": "gender", "op": "eq", "value": "male"}, actor=ACTOR
    )
    await journeys.set_active(merchant, journey.id, True, actor=ACTOR, now=datetime.now(UTC))
    await Member.filter(id=first.id).update(gender=Gender.FEMALE)
    assert await tick(started, journey.campaign_id) == 1
    admin = await staff_headers(started, merchant, "admin")
    url = f"/api/admin/journeys/{journey.id}"

    # New wording: the member already sent keeps her one message; the next to enter gets the new one.
    edited = await started.put(url, json=body(women.id, name="新人礼", text="新人礼已到账"), headers=admin)
    assert edited.status == 200, await edited.text()
    shown = await edited.json()
    assert (shown["name"], shown["active"], shown["campaign"]["content"]["fields"]["thing1"]) == (
        "新人礼",
        True,
        "{{ member_name }}，新人礼已到账",
    )
    assert await tick(started, journey.campaign_id) == 0
    await Member.filter(id=second.id).update(gender=Gender.FEMALE)
    assert await tick(started, journey.campaign_id) == 1
    assert sent_texts(wechat_sim) == [("mp-m0", "会员0，会员日到啦"), ("mp-m1", "会员1，新人礼已到账")]

    # A new segment counts from the edit: who is in it already is its baseline, who was sent stays sent.
    await Member.filter(id__in=[first.id, third.id]).update(gender=Gender.MALE)
    assert (await started.put(url, json=body(men.id, name="新人礼"), headers=admin)).status == 200
    assert await tick(started, journey.campaign_id) == 0
    rows = {r.member_id: r for r in await CampaignRecipient.filter(campaign_id=journey.campaign_id)}
    assert rows[first.id].status == RecipientStatus.SENT
    assert (rows[third.id].status, rows[third.id].reason) == (RecipientStatus.SKIPPED, "in_segment_at_start")
    await Member.filter(id=second.id).update(gender=Gender.MALE)  # enters the new segment: sent already
    assert await tick(started, journey.campaign_id) == 0
    assert len(sent_texts(wechat_sim)) == 2
    assert [
        e.detail.get("retriggered") for e in await AuditLog.filter(action="journey.update").order_by("id")
    ] == [
        False,
        True,
    ]


async def test_a_manager_edits_a_journey_that_is_switched_off(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    segment, journey = await women_journey(merchant)
    manager = await staff_headers(started, merchant, "manager")
    edited = await started.put(
        f"/api/admin/journeys/{journey.id}", json=body(segment.id, name="新人礼"), headers=manager
    )
    assert edited.status == 200, await edited.text()
    assert ((await edited.json())["name"], (await Journey.get(id=journey.id)).name) == ("新人礼", "新人礼")
    assert await AuditLog.filter(action="journey.update").count() == 1


async def test_a_refused_journey_edit_changes_nothing(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    segment, journey = await women_journey(merchant)
    await journeys.set_active(merchant, journey.id, True, actor=ACTOR, now=datetime.now(UTC))
    admin = await staff_headers(started, merchant, "admin")
    manager = await staff_headers(started, merchant, "manager")
    url = f"/api/admin/journeys/{journey.id}"
    before = (await Journey.get(id=journey.id), await Campaign.get(id=journey.campaign_id))

    cases = [
        ({**body(segment.id), "trigger": "whenever"}, 400, "trigger"),
        ({**body(segment.id), "segment_id": None}, 400, "segment_id"),
        ({**body(segment.id), "days": 400}, 400, "days"),
        (body(segment.id, holdout_pct=80), 400, "message.holdout_pct"),
        (
            body(segment.id, channel="custom", template_id="", content={"text": "你好"}),
            409,
            "message.channel",
        ),
    ]
    for sent, status, field in cases:
        response = await started.put(url, json=sent, headers=admin)
        assert response.status == status, (field, await response.text())
        assert (await response.json())["error"]["field"] == field
    by_manager = await started.put(url, json=body(segment.id, name="经理改的"), headers=manager)
    assert by_manager.status == 403  # on: an admin's to change
    assert (await by_manager.json())["error"]["field"] == "active"
    assert (
        await started.put("/api/admin/journeys/99999", json=body(segment.id), headers=admin)
    ).status == 404

    journey_after, campaign_after = (
        await Journey.get(id=journey.id),
        await Campaign.get(id=journey.campaign_id),
    )
    for field in ("name", "trigger", "days", "segment_id", "active", "active_since"):
        assert getattr(journey_after, field) == getattr(before[0], field)
    for field in ("name", "channel", "content", "holdout_pct", "validated_at"):
        assert getattr(campaign_after, field) == getattr(before[1], field)
    assert not await AuditLog.filter(action="journey.update").exists()
