"""A merchant's campaigns: create and edit drafts, validate and preview the content, test-send it to a
staff member, then schedule, pause, resume or cancel — every change in the audit log.

State machine: draft → scheduled → sending ⇄ paused → done; draft, scheduled, sending and paused may be
cancelled. Content must have been validated (rendered for a sample member and checked against the
channel) since its last edit before the campaign can be scheduled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from handlers.campaigns import audience, content
from handlers.campaigns.sending import CAMPAIGN_PLAN, CampaignServices, batch_size, queue_send
from handlers.core import audit_log, queries
from handlers.core.errors import Conflict, NotFound, ValidationError
from handlers.core.tasks import Effects, Queued
from handlers.rules import campaigns as rules
from handlers.wechat import errors as wechat_errors
from handlers.wechat.client import mp_credentials, oa_credentials
from models.campaign import Campaign, CampaignChannel, CampaignState, MarketingCaps
from models.coupon import CouponTemplate
from models.member import Member
from models.merchant import Merchant
from models.tag import Segment

EDITABLE = (CampaignState.DRAFT,)
MAX_THROTTLE = 5000
MAX_POINTS = 100_000


@dataclass(frozen=True, slots=True)
class Draft:
    """What a merchant sets on a campaign (all of it, on create and on each edit of a draft)."""

    name: str
    channel: str
    content: Mapping[str, Any]
    template_id: str = ""
    segment_id: int | None = None
    throttle_per_second: int = 50
    holdout_pct: int = 10
    attach_coupon_template_id: int | None = None
    attach_points: int = 0
    conversion_days: int = 7


async def _check(merchant: Merchant, draft: Draft) -> dict[str, Any]:
    name = draft.name.strip()
    if not 1 <= len(name) <= 64:
        raise ValidationError("name：请填写 1–64 个字的活动名称", field="name")
    if draft.channel not in rules.CHANNELS:
        raise ValidationError(
            "channel：渠道须为 mass、subscribe、custom 或 sms（模板消息不能用于营销）", field="channel"
        )
    if not 0 <= draft.holdout_pct <= 50:
        raise ValidationError("holdout_pct：对照组比例须在 0–50 之间", field="holdout_pct")
    if not 1 <= draft.throttle_per_second <= MAX_THROTTLE:
        raise ValidationError(
            f"throttle_per_second：每秒发送条数须在 1–{MAX_THROTTLE} 之间", field="throttle_per_second"
        )
    if not 1 <= draft.conversion_days <= 90:
        raise ValidationError("conversion_days：转化观察期须在 1–90 天之间", field="conversion_days")
    if not 0 <= draft.attach_points <= MAX_POINTS:
        raise ValidationError(f"attach_points：赠送积分须在 0–{MAX_POINTS} 之间", field="attach_points")
    if draft.attach_coupon_template_id is not None and not await CouponTemplate.exists(
        id=draft.attach_coupon_template_id, merchant_id=merchant.id
    ):
        raise ValidationError(
            "attach_coupon_template_id：没有这个优惠券模板", field="attach_coupon_template_id"
        )
    await audience.check_segment(merchant.id, draft.segment_id)
    channel: rules.Channel = draft.channel
    content.check(channel, draft.content, draft.template_id)
    await _check_tag(merchant, draft)
    return {
        "name": name,
        "channel": CampaignChannel(draft.channel),
        "content": dict(draft.content),
        "template_id": draft.template_id,
        "segment_id": draft.segment_id,
        "throttle_per_second": draft.throttle_per_second,
        "holdout_pct": draft.holdout_pct,
        "attach_coupon_template_id": draft.attach_coupon_template_id,
        "attach_points": draft.attach_points,
        "conversion_days": draft.conversion_days,
        "validated_at": None,
    }


async def checked(merchant: Merchant, draft: Draft) -> dict[str, Any]:
    """The columns a valid draft writes (as `create` and `update` check it), or its ValidationError."""
    return await _check(merchant, draft)


async def _check_tag(merchant: Merchant, draft: Draft) -> None:
    """A mass send to a WeChat tag goes to the tag its segment is synced to: the recipients recorded
    (the segment's members) are the people the tag holds."""
    tag = draft.content.get("wechat_tag_id")
    if tag is None:
        return
    segment = (
        await Segment.get_or_none(id=draft.segment_id, merchant_id=merchant.id)
        if draft.segment_id is not None
        else None
    )
    if segment is None or segment.wechat_tag_id != tag:
        raise ValidationError(
            "content.wechat_tag_id：须为所选人群（segment_id）已同步到的微信标签",
            field="content.wechat_tag_id",
        )


async def get(merchant: Merchant, campaign_id: int, *, lock: bool = False) -> Campaign:
    query = Campaign.filter(id=campaign_id, merchant_id=merchant.id, journey_id=None)
    found = await (query.select_for_update().first() if lock else query.first())
    if found is None:
        raise NotFound("没有这个营销活动", field="campaign_id")
    return found


async def create(merchant: Merchant, draft: Draft, *, actor: str) -> Campaign:
    values = await _check(merchant, draft)
    async with in_transaction():
        campaign = await Campaign.create(merchant_id=merchant.id, created_by=actor[:32], **values)
        await audit_log.record(merchant.id, actor, "campaign.create", str(campaign.id), name=values["name"])
    return campaign


async def update(merchant: Merchant, campaign_id: int, draft: Draft, *, actor: str) -> Campaign:
    values = await _check(merchant, draft)
    async with in_transaction():
        campaign = await get(merchant, campaign_id, lock=True)
        if campaign.state not in EDITABLE:
            raise Conflict("只有草稿状态的活动可以修改", field="state")
        await Campaign.filter(id=campaign.id).update(**values)
        await audit_log.record(merchant.id, actor, "campaign.update", str(campaign.id), name=values["name"])
    return await get(merchant, campaign_id)


async def sample_context(merchant: Merchant, campaign: Campaign) -> dict[str, Any]:
    """The first member of the audience (or a made-up one when there is none) as the campaign sees them."""
    async for page in audience.iter_member_ids(merchant.id, campaign.segment_id, batch=1):
        member = await Member.get(id=page[0])
        rows = await queries.fetch_rows(
            "SELECT balance FROM points_account WHERE member_id = :m", m=member.id
        )
        return content.member_context(
            name=member.name,
            code=member.code,
            points=int(rows[0]["balance"]) if rows else 0,
            merchant_name=merchant.name,
            campaign_name=campaign.name,
        )
    return {**content.SAMPLE, "merchant_name": merchant.name, "campaign_name": campaign.name}


@dataclass(frozen=True, slots=True)
class Preview:
    audience: int
    holdout_pct: int
    rendered: content.Rendered
    sample: dict[str, Any]


async def validate(merchant: Merchant, campaign_id: int, *, actor: str, now: datetime) -> Preview:
    """Render the content for a sample member and check it against the channel; a campaign passing
    it may be scheduled (until its next edit)."""
    campaign = await get(merchant, campaign_id)
    preview = await _preview(merchant, campaign)
    if campaign.state in EDITABLE:
        await Campaign.filter(id=campaign.id).update(validated_at=now)
        await audit_log.record(merchant.id, actor, "campaign.validate", str(campaign.id))
    return preview


async def preview(merchant: Merchant, campaign_id: int) -> Preview:
    return await _preview(merchant, await get(merchant, campaign_id))


async def _preview(merchant: Merchant, campaign: Campaign) -> Preview:
    channel: rules.Channel = campaign.channel.value
    content.check(channel, campaign.content, campaign.template_id)
    sample = await sample_context(merchant, campaign)
    rendered = content.render_for(channel, campaign.content, sample)
    return Preview(
        await audience.count(merchant.id, campaign.segment_id), campaign.holdout_pct, rendered, sample
    )


async def test_send(
    merchant: Merchant, campaign_id: int, services: CampaignServices, *, to: str, actor: str
) -> content.Rendered:
    """Send the content, rendered for a sample member, to one staff member: `to` is their Official
    Account openid (mass, custom), mini-program openid (subscribe) or phone (sms). Counts against no
    member's budget and is recorded nowhere but the audit log."""
    campaign = await get(merchant, campaign_id)
    channel: rules.Channel = campaign.channel.value
    content.check(channel, campaign.content, campaign.template_id)
    rendered = content.render_for(channel, campaign.content, await sample_context(merchant, campaign))
    try:
        if channel == "mass":
            await services.wechat.mass_preview_text(oa_credentials(merchant), to, rendered.text)
        elif channel == "custom":
            await services.wechat.send_custom_text(oa_credentials(merchant), to, rendered.text)
        elif channel == "subscribe":
            page = campaign.content.get("page")
            await services.wechat.send_subscribe(
                mp_credentials(merchant),
                to,
                campaign.template_id,
                dict(rendered.fields or {}),
                page=page if isinstance(page, str) else None,
            )
        else:
            result = await services.sms.send(
                to, campaign.template_id, rendered.params, session=f"test-{campaign.id}"
            )
            if not result.ok:
                raise ValidationError(f"to：短信未发出（{result.code}）", field="to")
    except wechat_errors.WeChatError as exc:
        raise ValidationError(f"to：微信拒绝了试发（{exc.errcode}）", field="to") from exc
    await audit_log.record(merchant.id, actor, "campaign.test_send", str(campaign.id), to=to[-4:])
    return rendered


async def _start(effects: Effects, campaign: Campaign, now: datetime) -> Queued:
    """scheduled → sending, and the plan task (in the caller's transaction)."""
    await Campaign.filter(id=campaign.id).update(state=CampaignState.SENDING, started_at=now, updated_at=now)
    return await effects.queue(
        CAMPAIGN_PLAN,
        f"campaign-plan:{campaign.id}:{campaign.resumes}",
        {"campaign_id": campaign.id},
        merchant_id=campaign.merchant_id,
    )


async def schedule(
    merchant: Merchant, campaign_id: int, effects: Effects, *, at: datetime | None, actor: str, now: datetime
) -> Campaign:
    """Schedule a validated draft for `at` (None or past: now)."""
    queued: list[Queued] = []
    async with in_transaction():
        campaign = await get(merchant, campaign_id, lock=True)
        if campaign.state != CampaignState.DRAFT:
            raise Conflict("只有草稿状态的活动可以安排发送", field="state")
        if campaign.validated_at is None:
            raise Conflict("请先校验活动内容（validate），通过后才能安排发送", field="validated_at")
        when = at if at is not None and at > now else now
        await Campaign.filter(id=campaign.id).update(
            state=CampaignState.SCHEDULED, scheduled_at=when, updated_at=now
        )
        if when <= now:
            queued.append(await _start(effects, campaign, now))
        await audit_log.record(merchant.id, actor, "campaign.schedule", str(campaign.id), at=when.isoformat())
    await effects.after_commit(*queued)
    return await get(merchant, campaign_id)


async def start_due(effects: Effects, now: datetime) -> int:
    """The minute cron: scheduled campaigns whose time has come start sending."""
    started: list[Queued] = []
    async with in_transaction():
        due = await Campaign.filter(state=CampaignState.SCHEDULED, scheduled_at__lte=now).select_for_update()
        for campaign in due:
            started.append(await _start(effects, campaign, now))
    await effects.after_commit(*started)
    return len(started)


async def pause(merchant: Merchant, campaign_id: int, *, actor: str, now: datetime) -> Campaign:
    async with in_transaction():
        campaign = await get(merchant, campaign_id, lock=True)
        if campaign.state != CampaignState.SENDING:
            raise Conflict("只有发送中的活动可以暂停", field="state")
        await Campaign.filter(id=campaign.id).update(state=CampaignState.PAUSED, updated_at=now)
        await audit_log.record(merchant.id, actor, "campaign.pause", str(campaign.id))
    return await get(merchant, campaign_id)


_OPEN_RANGES_SQL = """
SELECT min(member_id) AS lo, max(member_id) AS hi FROM (
    SELECT member_id, (row_number() OVER (ORDER BY member_id) - 1) / :batch AS page
      FROM campaign_recipient WHERE campaign_id = :campaign AND status IN ('pending', 'sending')
) AS open GROUP BY page ORDER BY lo
"""


async def resume(
    merchant: Merchant, campaign_id: int, effects: Effects, *, actor: str, now: datetime
) -> Campaign:
    """paused → sending: a new send task per page of what is left, and the plan goes on if unfinished."""
    queued: list[Queued] = []
    async with in_transaction():
        campaign = await get(merchant, campaign_id, lock=True)
        if campaign.state != CampaignState.PAUSED:
            raise Conflict("只有已暂停的活动可以继续", field="state")
        campaign.resumes += 1
        await Campaign.filter(id=campaign.id).update(
            state=CampaignState.SENDING, resumes=campaign.resumes, updated_at=now
        )
        campaign.state = CampaignState.SENDING
        ranges = await queries.fetch_rows(
            _OPEN_RANGES_SQL, campaign=campaign.id, batch=batch_size(campaign.channel)
        )
        for row in ranges:
            queued.append(await queue_send(effects, campaign, int(row["lo"]), int(row["hi"])))
        if not campaign.planned:
            queued.append(
                await effects.queue(
                    CAMPAIGN_PLAN,
                    f"campaign-plan:{campaign.id}:{campaign.resumes}",
                    {"campaign_id": campaign.id},
                    merchant_id=campaign.merchant_id,
                )
            )
        await audit_log.record(merchant.id, actor, "campaign.resume", str(campaign.id))
    await effects.after_commit(*queued)
    return await get(merchant, campaign_id)


async def cancel(merchant: Merchant, campaign_id: int, *, actor: str, now: datetime) -> Campaign:
    """Stop for good: what was not claimed yet is skipped (`cancelled`); messages in flight finish."""
    async with in_transaction():
        campaign = await get(merchant, campaign_id, lock=True)
        if campaign.state in (CampaignState.DONE, CampaignState.CANCELLED):
            raise Conflict("活动已结束，不能取消", field="state")
        await stop_for_good(campaign.id, now)
        await audit_log.record(merchant.id, actor, "campaign.cancel", str(campaign.id))
    return await get(merchant, campaign_id)


async def stop_for_good(campaign_id: int, now: datetime) -> None:
    """Cancel a campaign (in the caller's transaction): what was not claimed yet is skipped
    (`cancelled`); messages in flight finish and are recorded."""
    await Campaign.filter(id=campaign_id).update(
        state=CampaignState.CANCELLED, finished_at=now, updated_at=now
    )
    await queries.fetch_rows(
        "UPDATE campaign_recipient SET status = 'skipped', reason = 'cancelled', updated_at = :now"
        " WHERE campaign_id = :campaign AND status = 'pending'",
        campaign=campaign_id,
        now=now,
    )


async def set_caps(merchant: Merchant, *, marketing_per_day: int, sms_per_day: int, actor: str) -> None:
    for name, value in (("marketing_per_day", marketing_per_day), ("sms_per_day", sms_per_day)):
        if not 1 <= value <= 10:
            raise ValidationError(f"{name}：须在 1–10 之间", field=name)
    await MarketingCaps.update_or_create(
        defaults={"marketing_per_day": marketing_per_day, "sms_per_day": sms_per_day}, merchant_id=merchant.id
    )
    await audit_log.record(
        merchant.id, actor, "campaign.caps", "", marketing_per_day=marketing_per_day, sms_per_day=sms_per_day
    )
