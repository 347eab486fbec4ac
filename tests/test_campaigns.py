"""Campaigns end to end on PostgreSQL + Redis against the WeChat simulator: the governor's budgets and
skips, the holdout, retries, never twice, attachments once, the report."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from handlers.campaigns import manage, report
from handlers.campaigns.manage import Draft
from handlers.campaigns.sending import CAMPAIGN_SEND
from handlers.notices import reach
from handlers.rules import campaigns as rules
from models.campaign import Campaign, CampaignRecipient, CampaignState, RecipientStatus
from models.coupon import Coupon, CouponKind, CouponTemplate
from models.member import Member
from models.merchant import Merchant
from models.points import PointsTransaction
from models.task import Task, TaskStatus
from tests.support.factories import make_member, make_merchant
from tests.support.wechat_sim import WeChatSim
from webhooks.appkeys import EFFECTS, REDIS

TEMPLATE = "TPL-PROMO"
FIELDS = {"thing1": "{{ member_name }}，会员日到啦", "thing2": "{{ merchant_name }}"}
ACTOR = "staff:1"


@pytest.fixture
async def started(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> Any:
    return await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))


async def shop(wechat_sim: WeChatSim) -> Merchant:
    merchant = await make_merchant("shop")
    wechat_sim.add_app(merchant.oa_appid, merchant.oa_secret)
    wechat_sim.add_app(merchant.mp_appid, merchant.mp_secret)
    wechat_sim.add_template(merchant.mp_appid, TEMPLATE, tuple(FIELDS))
    await Merchant.filter(id=merchant.id).update(quiet_start_minute=0, quiet_end_minute=0)
    return await Merchant.get(id=merchant.id)


async def granted(
    merchant: Merchant, wechat_sim: WeChatSim, count: int, *, prefix: str = "m"
) -> list[Member]:
    """Mini-program members, each holding one grant of TEMPLATE (ours and the simulator's)."""
    made = []
    for n in range(count):
        member = await make_member(
            merchant, openid=f"o-{prefix}{n}", mp_openid=f"mp-{prefix}{n}", name=f"会员{n}"
        )
        wechat_sim.add_follower(merchant.mp_appid, f"mp-{prefix}{n}")
        wechat_sim.grant(merchant.mp_appid, f"mp-{prefix}{n}", TEMPLATE)
        await reach.record_grants(member, [TEMPLATE], [])
        made.append(member)
    return made


def draft(**overrides: Any) -> Draft:
    values: dict[str, Any] = {
        "name": "会员日",
        "channel": "subscribe",
        "content": {"fields": FIELDS, "page": "pages/index/index"},
        "template_id": TEMPLATE,
        "holdout_pct": 0,
        "throttle_per_second": 1000,
        **overrides,
    }
    return Draft(**values)


async def launch(client: Any, merchant: Merchant, **overrides: Any) -> Campaign:
    campaign = await manage.create(merchant, draft(**overrides), actor=ACTOR)
    await manage.validate(merchant, campaign.id, actor=ACTOR, now=datetime.now(UTC))
    return await manage.schedule(
        merchant, campaign.id, client.app[EFFECTS], at=None, actor=ACTOR, now=datetime.now(UTC)
    )


async def drive(client: Any, campaign_id: int, *, at: datetime | None = None, rounds: int = 30) -> Campaign:
    """Run the due tasks (as the worker's sweep would) until the campaign has nothing left to do."""
    ahead = (at - datetime.now(UTC)) if at is not None else timedelta(0)
    for _ in range(rounds):
        ran = await client.app[EFFECTS].run_due(datetime.now(UTC) + ahead)
        running = await Task.filter(status=TaskStatus.RUNNING).exists()  # memory://: in the background
        if not sum(ran.values()) and not running:
            break
        await asyncio.sleep(0.02)
    return await Campaign.get(id=campaign_id)


async def outcomes(campaign_id: int) -> dict[str, int]:
    return await report.counts(campaign_id)


async def test_a_subscribe_campaign_reaches_each_granted_member_once(
    started: Any, wechat_sim: WeChatSim
) -> None:
    merchant = await shop(wechat_sim)
    members = await granted(merchant, wechat_sim, 12)
    await make_member(merchant, openid="o-nogrant", mp_openid="mp-nogrant")  # no grant: skipped
    await make_member(merchant, openid="o-oa-only")  # no mini-program: skipped
    campaign = await launch(started, merchant)
    done = await drive(started, campaign.id)
    assert done.state == CampaignState.DONE
    assert await outcomes(campaign.id) == {
        "pending": 0,
        "sending": 0,
        "sent": 12,
        "failed": 0,
        "skipped": 2,
        "holdout": 0,
    }
    skipped = {r.reason for r in await CampaignRecipient.filter(status=RecipientStatus.SKIPPED)}
    assert skipped == {"no_subscribe_grant", "no_mini_program"}
    records = [r for r in wechat_sim.records("cgi-bin/message/subscribe/send") if r["errcode"] == 0]
    assert sorted(r["body"]["touser"] for r in records) == sorted(str(m.mp_openid) for m in members)
    first = next(r["body"] for r in records if r["body"]["touser"] == "mp-m0")
    assert first["data"] == {"thing1": {"value": "会员0，会员日到啦"}, "thing2": {"value": "shop 门店"}}
    assert first["client_msg_id"] == rules.client_msg_id(campaign.id, members[0].id)
    # The grants were used: ours and WeChat's agree.
    assert all([await reach.unused_grants(m.id, TEMPLATE) for m in members]) is False
    # Running everything again sends nothing.
    await drive(started, campaign.id)
    assert len(wechat_sim.records("cgi-bin/message/subscribe/send")) == 12


async def test_the_holdout_is_never_messaged_and_is_about_its_share(
    started: Any, wechat_sim: WeChatSim
) -> None:
    merchant = await shop(wechat_sim)
    await granted(merchant, wechat_sim, 60)
    campaign = await launch(started, merchant, holdout_pct=25)
    await drive(started, campaign.id)
    counts = await outcomes(campaign.id)
    held = await CampaignRecipient.filter(campaign_id=campaign.id, status=RecipientStatus.HOLDOUT)
    assert counts["holdout"] == len(held) and 5 <= len(held) <= 25
    assert counts["sent"] == 60 - len(held)
    held_openids = {f"mp-m{n}" for n in range(60)} & {
        str(m.mp_openid) for m in await Member.filter(id__in=[r.member_id for r in held])
    }
    sent_to = {r["body"]["touser"] for r in wechat_sim.records("cgi-bin/message/subscribe/send")}
    assert not held_openids & sent_to
    assert all(rules.in_holdout(campaign.id, r.member_id, 25) for r in held)


async def test_the_frequency_cap_holds_across_campaigns(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    members = await granted(merchant, wechat_sim, 4)
    for member in members:  # a second grant each: only the merchant's daily cap stops the second campaign
        wechat_sim.grant(merchant.mp_appid, str(member.mp_openid), TEMPLATE)
        await reach.record_grants(member, [TEMPLATE], [])
    first = await launch(started, merchant)
    await drive(started, first.id)
    second = await launch(started, merchant, name="第二波")
    await drive(started, second.id)
    assert (await outcomes(second.id))["skipped"] == 4
    assert {r.reason for r in await CampaignRecipient.filter(campaign_id=second.id)} == {"frequency_cap"}
    await manage.set_caps(merchant, marketing_per_day=2, sms_per_day=1, actor=ACTOR)
    third = await launch(started, merchant, name="第三波")
    await drive(started, third.id)
    assert (await outcomes(third.id))["sent"] == 4


async def test_busy_wechat_is_retried_with_backoff_and_refusals_are_not(
    started: Any, wechat_sim: WeChatSim
) -> None:
    merchant = await shop(wechat_sim)
    await granted(merchant, wechat_sim, 3)
    wechat_sim.inject_error("cgi-bin/message/subscribe/send", 45009, times=2)
    wechat_sim.inject_error("cgi-bin/message/subscribe/send", 0, status=502, times=1)
    campaign = await launch(started, merchant)
    await drive(started, campaign.id)
    assert (await outcomes(campaign.id))["sending"] == 3  # waiting for their retry
    later = datetime.now(UTC) + timedelta(seconds=30)
    done = await drive(started, campaign.id, at=later)
    assert done.state == CampaignState.DONE and (await outcomes(campaign.id))["sent"] == 3
    assert [r.attempts for r in await CampaignRecipient.filter(campaign_id=campaign.id)] == [2, 2, 2]
    # 43101 (WeChat knows no grant): failed at once, and our grant count follows WeChat's.
    other = await granted(merchant, wechat_sim, 1, prefix="x")
    await manage.set_caps(merchant, marketing_per_day=5, sms_per_day=1, actor=ACTOR)
    wechat_sim.inject_error("cgi-bin/message/subscribe/send", 43101, times=1)
    refused = await launch(started, merchant, name="再来")
    await drive(started, refused.id, at=later)
    row = await CampaignRecipient.get(campaign_id=refused.id, member_id=other[0].id)
    assert (row.status, row.errcode, row.attempts) == (RecipientStatus.FAILED, 43101, 1)


async def test_a_crash_mid_send_resends_under_the_same_id_and_delivers_once(
    started: Any, wechat_sim: WeChatSim
) -> None:
    """A recipient left `sending` by a dead process is sent again with its client_msg_id: the simulator
    answers 45065 for the one it had, and delivers the one it had not."""
    merchant = await shop(wechat_sim)
    members = await granted(merchant, wechat_sim, 2)
    campaign = await launch(started, merchant)
    await drive(started, campaign.id)
    assert (await outcomes(campaign.id))["sent"] == 2
    # As if the process had died after the call for member 0 (delivered) and before the one for member 1.
    await CampaignRecipient.filter(campaign_id=campaign.id).update(status=RecipientStatus.SENDING)
    await Campaign.filter(id=campaign.id).update(state=CampaignState.SENDING)
    delivered = {
        (r["body"]["touser"], r["body"]["client_msg_id"])
        for r in wechat_sim.records("cgi-bin/message/subscribe/send")
    }
    wechat_sim.state.campaigns.subscribe_client_ids.pop(
        (merchant.mp_appid, "mp-m1", rules.client_msg_id(campaign.id, members[1].id))
    )
    wechat_sim.grant(merchant.mp_appid, "mp-m1", TEMPLATE)
    # The send task's process died: its lease lapses and the sweep runs it again.
    lapsed = datetime.now(UTC) - timedelta(seconds=1)
    await Task.filter(kind=CAMPAIGN_SEND).update(status=TaskStatus.RUNNING, lease_until=lapsed)
    await drive(started, campaign.id)
    rows = {r.member_id: r for r in await CampaignRecipient.filter(campaign_id=campaign.id)}
    assert (
        rows[members[0].id].status == RecipientStatus.SENT
        and rows[members[0].id].reason == "resent_duplicate"
    )
    assert rows[members[1].id].status == RecipientStatus.SENT and rows[members[1].id].attempts == 2
    answers = [r["errcode"] for r in wechat_sim.records("cgi-bin/message/subscribe/send")]
    assert sorted(answers) == [0, 0, 0, 45065]
    assert len(delivered) == 2


async def test_attachments_are_granted_once_per_recipient(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    members = await granted(merchant, wechat_sim, 3)
    template = await CouponTemplate.create(
        merchant_id=merchant.id,
        name="满100减10",
        kind=CouponKind.FIXED,
        threshold_fen=10_000,
        amount_off_fen=1_000,
        valid_days=30,
    )
    campaign = await launch(started, merchant, attach_coupon_template_id=template.id, attach_points=50)
    await drive(started, campaign.id)
    coupons = await Coupon.filter(template_id=template.id)
    assert sorted(c.member_id for c in coupons) == sorted(m.id for m in members)
    assert {c.issue_key for c in coupons} == {f"campaign:{campaign.id}:{m.id}" for m in members}
    points = await PointsTransaction.filter(idempotency_key__startswith=f"campaign:{campaign.id}:")
    assert sorted(p.delta for p in points) == [50, 50, 50]
    report_ = await report.report(await Campaign.get(id=campaign.id))
    assert (report_.coupons_issued, report_.coupons_redeemed) == (3, 0)


async def test_custom_messages_only_inside_the_window(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    inside = await make_member(merchant, openid="o-in")
    outside = await make_member(merchant, openid="o-out")
    for openid in ("o-in", "o-out"):
        wechat_sim.add_follower(merchant.oa_appid, openid)
    wechat_sim.interact(merchant.oa_appid, "o-in")
    await reach.window_opened(started.app[REDIS], merchant.id, "o-in", datetime.now(UTC))
    campaign = await launch(
        started, merchant, channel="custom", template_id="", content={"text": "{{ member_name }}，周末会员日"}
    )
    await drive(started, campaign.id)
    rows = {r.member_id: r for r in await CampaignRecipient.filter(campaign_id=campaign.id)}
    assert rows[inside.id].status == RecipientStatus.SENT
    assert (rows[outside.id].status, rows[outside.id].reason) == (
        RecipientStatus.SKIPPED,
        "outside_48h_window",
    )
    assert [r["body"]["touser"] for r in wechat_sim.records("cgi-bin/message/custom/send")] == ["o-in"]
    assert (await reach.window(started.app[REDIS], merchant.id, "o-in"))[1] == 1


async def test_pause_resume_and_cancel(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    await granted(merchant, wechat_sim, 5)
    campaign = await launch(started, merchant)
    paused = await manage.pause(merchant, campaign.id, actor=ACTOR, now=datetime.now(UTC))
    assert paused.state == CampaignState.PAUSED
    await drive(started, campaign.id)
    assert wechat_sim.records("cgi-bin/message/subscribe/send") == []
    resumed = await manage.resume(
        merchant, campaign.id, started.app[EFFECTS], actor=ACTOR, now=datetime.now(UTC)
    )
    assert resumed.state == CampaignState.SENDING
    done = await drive(started, campaign.id)
    assert done.state == CampaignState.DONE and (await outcomes(campaign.id))["sent"] == 5
    other = await manage.create(merchant, draft(name="取消"), actor=ACTOR)
    cancelled = await manage.cancel(merchant, other.id, actor=ACTOR, now=datetime.now(UTC))
    assert cancelled.state == CampaignState.CANCELLED


async def test_quiet_hours_defer_sending_to_their_end(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    await granted(merchant, wechat_sim, 2)
    # Quiet all day but the minute starting two minutes from now (merchant-local): the send waits.
    ends = (datetime.now(UTC).astimezone(ZoneInfo(merchant.timezone)) + timedelta(minutes=2)).replace(
        second=0, microsecond=0
    )
    end = ends.hour * 60 + ends.minute
    await Merchant.filter(id=merchant.id).update(quiet_start_minute=(end + 1) % 1440, quiet_end_minute=end)
    campaign = await launch(started, await Merchant.get(id=merchant.id))
    await drive(started, campaign.id)
    assert wechat_sim.records("cgi-bin/message/subscribe/send") == []
    assert (await outcomes(campaign.id))["pending"] == 2
    done = await drive(started, campaign.id, at=ends + timedelta(seconds=30))
    assert done.state == CampaignState.DONE and (await outcomes(campaign.id))["sent"] == 2
