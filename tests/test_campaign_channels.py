"""Campaign channels beyond subscribe messages: OA mass send (chunks, clientmsgid, the monthly quota,
MASSSENDJOBFINISH), SMS through Tencent Cloud's signed API (simulated), the TD opt-out, journeys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from handlers.campaigns import consent, journeys, manage
from handlers.campaigns.journeys import JourneyDraft
from handlers.campaigns.sms import TencentSms
from models.campaign import Campaign, CampaignRecipient, MassJob, RecipientStatus
from models.member import Member
from models.merchant import Merchant
from tests.support.factories import AES_KEY, make_member
from tests.support.wechat_push import WeChatPusher, event_xml, text_xml
from tests.support.wechat_sim import WeChatSim
from tests.test_campaigns import ACTOR, draft, drive, launch, outcomes, shop
from webhooks.appkeys import EFFECTS


@pytest.fixture
async def started(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> Any:
    return await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))


async def followers(merchant: Merchant, wechat_sim: WeChatSim, count: int) -> list[Member]:
    made = []
    for n in range(count):
        wechat_sim.add_follower(merchant.oa_appid, f"o-f{n}")
        made.append(await make_member(merchant, openid=f"o-f{n}", phone=f"1380000{n:04d}"))
    return made


MASS = {"channel": "mass", "template_id": "", "content": {"text": "{{ merchant_name }} 周末会员日，全场九折"}}


async def test_a_mass_send_goes_out_in_chunks_with_a_client_msg_id(
    started: Any, wechat_sim: WeChatSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handlers.campaigns import sending

    monkeypatch.setattr(sending, "batch_size", lambda channel: 4)  # 10,000 in production
    merchant = await shop(wechat_sim)
    members = await followers(merchant, wechat_sim, 10)
    campaign = await launch(started, merchant, **MASS)
    await drive(started, campaign.id)
    calls = [r for r in wechat_sim.records("cgi-bin/message/mass/send") if r["errcode"] == 0]
    assert sorted(len(r["body"]["touser"]) for r in calls) == [2, 4, 4]  # chunks go out side by side
    assert sorted(o for r in calls for o in r["body"]["touser"]) == sorted(str(m.openid) for m in members)
    assert {r["body"]["text"]["content"] for r in calls} == {"shop 门店 周末会员日，全场九折"}
    assert len({r["body"]["clientmsgid"] for r in calls}) == 3
    assert (await outcomes(campaign.id))["sent"] == 10
    jobs = await MassJob.filter(campaign_id=campaign.id).order_by("-recipients", "id")
    assert [j.recipients for j in jobs] == [4, 4, 2]
    # WeChat reports the first job failed as a whole: its recipients are failed with that status.
    pusher = WeChatPusher(started, merchant.slug, "testtoken", AES_KEY, merchant.oa_appid)
    report = (
        f"<MsgID>{jobs[0].msg_id}</MsgID><Status><![CDATA[send fail]]></Status><TotalCount>4</TotalCount>"
        "<FilterCount>4</FilterCount><SentCount>0</SentCount><ErrorCount>4</ErrorCount>"
    )
    now = int(datetime.now(UTC).timestamp())
    assert (
        await pusher.push(event_xml("mphelper", "MASSSENDJOBFINISH", create_time=now, extra=report))
    ).content == ""
    job = await MassJob.get(id=jobs[0].id)
    assert (job.status, job.total_count, job.error_count) == ("send fail", 4, 4)
    failed = await CampaignRecipient.filter(campaign_id=campaign.id, status=RecipientStatus.FAILED)
    assert len(failed) == 4 and {r.reason for r in failed} == {"mass:send fail"}


async def test_mass_send_respects_four_a_month(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    await followers(merchant, wechat_sim, 2)
    await manage.set_caps(merchant, marketing_per_day=10, sms_per_day=1, actor=ACTOR)
    sent = []
    for n in range(5):
        campaign = await launch(started, merchant, name=f"第{n}期", **MASS)
        await drive(started, campaign.id)
        sent.append(await outcomes(campaign.id))
    assert [s["sent"] for s in sent] == [2, 2, 2, 2, 0]
    reasons = {r.reason for r in await CampaignRecipient.filter(campaign_id=campaign.id)}
    assert reasons == {"mass_monthly_quota"}
    assert len(wechat_sim.records("cgi-bin/message/mass/send")) == 4


async def test_sms_through_tencent_cloud_signed_and_only_with_consent(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    sms_settings = {
        "sms_provider": "tencent",
        "tencent_sms_endpoint": f"{wechat_sim.url}/tencent-sms/",
        "tencent_sms_secret_id": "AKIDtest",
        "tencent_sms_secret_key": SecretStr("sms-secret-key"),
        "tencent_sms_sdk_app_id": "1400000001",
        "tencent_sms_sign_name": "某某门店",
    }
    started = await aiohttp_client(make_app(wechat_api_base=wechat_sim.url, **sms_settings))
    wechat_sim.state.campaigns.sms_keys["AKIDtest"] = "sms-secret-key"
    merchant = await shop(wechat_sim)
    members = await followers(merchant, wechat_sim, 3)
    for member in members[:2]:
        await consent.set_consent(member, True, via="mp", now=datetime.now(UTC))
    await Member.filter(id=members[1].id).update(phone=None)  # consent, but no phone
    campaign = await launch(
        started,
        merchant,
        channel="sms",
        template_id="123456",
        content={"params": ["{{ member_name }}", "9折"]},
    )
    await drive(started, campaign.id)
    async with aiohttp.ClientSession() as http:
        wrong = TencentSms(
            http, f"{wechat_sim.url}/tencent-sms/", "AKIDtest", "not-the-key", "1400000001", "某某门店"
        )
        refused = await wrong.send("13900000000", "123456", ["x"], session="s")
    rows = {r.member_id: r for r in await CampaignRecipient.filter(campaign_id=campaign.id)}
    assert rows[members[0].id].status == RecipientStatus.SENT and rows[members[0].id].msgid
    assert (rows[members[1].id].status, rows[members[1].id].reason) == (RecipientStatus.SKIPPED, "no_phone")
    assert (rows[members[2].id].status, rows[members[2].id].reason) == (
        RecipientStatus.SKIPPED,
        "no_sms_consent",
    )
    sms = wechat_sim.state.campaigns.sms_sent
    assert next((s["phone"], s["params"]) for s in sms) == ("+8613800000000", ["会员", "9折"])
    assert (refused.ok, refused.code) == (False, "AuthFailure.SignatureFailure")


async def test_replying_td_withdraws_sms_consent(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    [member] = await followers(merchant, wechat_sim, 1)
    await consent.set_consent(member, True, via="mp", now=datetime.now(UTC))
    pusher = WeChatPusher(started, merchant.slug, "testtoken", AES_KEY, merchant.oa_appid)
    now = int(datetime.now(UTC).timestamp())
    reply = await pusher.push(text_xml("o-f0", "TD", msg_id="990001", create_time=now))
    assert "退订" in reply.content
    assert (await Member.get(id=member.id)).sms_consent is False


async def test_a_journey_sends_once_n_days_after_registration(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    await manage.set_caps(merchant, marketing_per_day=5, sms_per_day=1, actor=ACTOR)
    journey = await journeys.create(
        merchant,
        JourneyDraft(
            "注册 3 天问候",
            "days_after_registration",
            3,
            None,
            draft(**MASS | {"channel": "custom", "content": {"text": "{{ member_name }}，欢迎"}}),
        ),
        actor=ACTOR,
    )
    now = datetime.now(UTC)
    await journeys.set_active(merchant, journey.id, True, actor=ACTOR, now=now - timedelta(days=10))
    old = await make_member(merchant, openid="o-old")
    due = await make_member(merchant, openid="o-due")
    fresh = await make_member(merchant, openid="o-fresh")
    await Member.filter(id=old.id).update(registered_at=now - timedelta(days=30))  # before the journey
    await Member.filter(id=due.id).update(registered_at=now - timedelta(days=4))
    from handlers.notices import reach
    from webhooks.appkeys import REDIS

    wechat_sim.add_follower(merchant.oa_appid, "o-due")
    wechat_sim.interact(merchant.oa_appid, "o-due")
    await reach.window_opened(started.app[REDIS], merchant.id, "o-due", now)
    counts = await journeys.campaigns_job(now, started.app[EFFECTS])
    assert counts["journey_members"] == 1
    await drive(started, journey.campaign_id)
    again = await journeys.campaigns_job(now + timedelta(minutes=1), started.app[EFFECTS])
    assert again["journey_members"] == 0
    rows = await CampaignRecipient.filter(campaign_id=journey.campaign_id)
    assert [(r.member_id, r.status) for r in rows] == [(due.id, RecipientStatus.SENT)]
    assert [r["body"]["touser"] for r in wechat_sim.records("cgi-bin/message/custom/send")] == ["o-due"]
    assert fresh.id not in {r.member_id for r in rows}
    assert (await Campaign.get(id=journey.campaign_id)).journey_id == journey.id


async def test_a_campaign_to_a_segment_reaches_only_its_members(started: Any, wechat_sim: WeChatSim) -> None:
    from handlers.segments.catalogue import create_segment
    from models.member import Gender
    from tests.test_campaigns import granted

    merchant = await shop(wechat_sim)
    members = await granted(merchant, wechat_sim, 6)
    women = [m.id for m in members[:4]]
    await Member.filter(id__in=women).update(gender=Gender.FEMALE)
    await Member.filter(id=women[0]).update(blocked_at=datetime.now(UTC))  # in the segment, but blocked
    segment = await create_segment(
        merchant.id, "女性会员", {"attr": "gender", "op": "eq", "value": "female"}, actor=ACTOR
    )
    preview = await manage.preview(
        merchant, (await manage.create(merchant, draft(segment_id=segment.id), actor=ACTOR)).id
    )
    assert preview.audience == 3
    campaign = await launch(started, merchant, segment_id=segment.id, name="女神节")
    await drive(started, campaign.id)
    rows = await CampaignRecipient.filter(campaign_id=campaign.id)
    assert sorted(r.member_id for r in rows) == sorted(women[1:])
    assert {r.status for r in rows} == {RecipientStatus.SENT}
    refused = await started.post(
        "/api/admin/campaigns",
        json={"name": "x", "channel": "mass", "content": {"text": "x"}, "segment_id": 999},
    )
    assert refused.status in (400, 401)  # no staff token here: the door refuses first (401)


async def test_a_journey_messages_members_who_enter_a_segment_once(
    started: Any, wechat_sim: WeChatSim
) -> None:
    from handlers.segments.catalogue import create_segment
    from models.member import Gender
    from tests.test_campaigns import granted

    merchant = await shop(wechat_sim)
    await manage.set_caps(merchant, marketing_per_day=5, sms_per_day=1, actor=ACTOR)
    members = await granted(merchant, wechat_sim, 3)
    await Member.filter(id=members[0].id).update(gender=Gender.FEMALE)  # in it before the journey
    segment = await create_segment(
        merchant.id, "女性会员", {"attr": "gender", "op": "eq", "value": "female"}, actor=ACTOR
    )
    journey = await journeys.create(
        merchant, JourneyDraft("欢迎加入", "enters_segment", 0, segment.id, draft()), actor=ACTOR
    )
    await journeys.set_active(merchant, journey.id, True, actor=ACTOR, now=datetime.now(UTC))
    await Member.filter(id=members[1].id).update(gender=Gender.FEMALE)  # enters
    counts = await journeys.campaigns_job(datetime.now(UTC), started.app[EFFECTS])
    assert counts["journey_members"] == 1
    await drive(started, journey.campaign_id)
    assert (await journeys.campaigns_job(datetime.now(UTC), started.app[EFFECTS]))["journey_members"] == 0
    rows = {r.member_id: r for r in await CampaignRecipient.filter(campaign_id=journey.campaign_id)}
    assert (rows[members[0].id].status, rows[members[0].id].reason) == (
        RecipientStatus.SKIPPED,
        "in_segment_at_start",
    )
    assert rows[members[1].id].status == RecipientStatus.SENT
    assert members[2].id not in rows


async def test_a_mass_send_to_a_synced_wechat_tag_is_one_sendall(
    started: Any, wechat_sim: WeChatSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.wechat_sim.tag_state import SimTag
    from handlers.campaigns import sending
    from handlers.core.errors import ValidationError
    from handlers.segments.catalogue import create_segment
    from models.tag import Segment

    monkeypatch.setattr(sending, "batch_size", lambda channel: 2)  # several batches, still one sendall
    merchant = await shop(wechat_sim)
    members = await followers(merchant, wechat_sim, 5)
    segment = await create_segment(
        merchant.id, "全部", {"attr": "blocked", "op": "eq", "value": False}, actor=ACTOR
    )
    await Segment.filter(id=segment.id).update(wechat_tag_id=100)  # as the segment sync leaves it
    wechat_sim.state.user_tags.of(merchant.oa_appid)[100] = SimTag(
        100, "全部", {str(m.openid) for m in members}
    )
    with pytest.raises(ValidationError):
        await manage.create(
            merchant,
            draft(**MASS | {"content": {"text": "x", "wechat_tag_id": 101}}, segment_id=segment.id),
            actor=ACTOR,
        )
    tagged = {**MASS, "content": {"text": "周末会员日", "wechat_tag_id": 100}}
    campaign = await launch(started, merchant, segment_id=segment.id, **tagged)
    await drive(started, campaign.id)
    calls = wechat_sim.records("cgi-bin/message/mass/sendall")
    assert [r["errcode"] for r in calls] == [0, 45065, 45065]  # one send; the other batches are its replays
    assert {r["body"]["clientmsgid"] for r in calls} == {f"c{campaign.id}-tag"}
    assert calls[0]["body"]["filter"] == {"is_to_all": False, "tag_id": 100}
    assert (await outcomes(campaign.id))["sent"] == 5
    [job] = list(wechat_sim.state.campaigns.mass_jobs.values())
    assert (len(job.openids), job.sent) == (5, 5)


async def test_sms_per_member_daily_cap(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    [member] = await followers(merchant, wechat_sim, 1)
    await consent.set_consent(member, True, via="mp", now=datetime.now(UTC))
    await manage.set_caps(merchant, marketing_per_day=5, sms_per_day=1, actor=ACTOR)
    sms = {"channel": "sms", "template_id": "123456", "content": {"params": ["{{ member_name }}"]}}
    first = await launch(started, merchant, name="一", **sms)
    await drive(started, first.id)
    second = await launch(started, merchant, name="二", **sms)
    await drive(started, second.id)
    assert (await outcomes(first.id))["sent"] == 1
    [row] = await CampaignRecipient.filter(campaign_id=second.id)
    assert (row.status, row.reason) == (RecipientStatus.SKIPPED, "sms_daily_cap")
