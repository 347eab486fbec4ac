"""Triggered journeys: "N days after registration / the first purchase" and "enters a segment" send
the journey's campaign content once per member — the campaign's `(campaign, member)` recipient row is
the once — with the same governor, holdout and attachment.

The minute cron (`tick`) selects members whose event + N days fell between the journey's activation
and now, or who are in the segment now, and who have no row yet (due and not yet done, so a missed
minute is caught up), writes their rows (`holdout` or `pending`) and queues one send task for them.
Activation never reaches back into history: only events after `active_since` count, and the members
already in the segment when an "enters a segment" journey is switched on get a `skipped` row
(`in_segment_at_start`), so only those who enter afterwards are messaged.

An edit (name, trigger, days, segment, message; checked as on creation) keeps the journey's campaign,
so its recipient rows stand: a member already sent (or skipped, or held out) is never messaged again,
and the new message goes to those who fall due from then on. Changing the trigger, days or segment of
a journey that is on counts as switching it on again: only events after the edit trigger it (and the
members already in a new segment are its baseline). An active journey's channel cannot change (rows
already due are written for it), and its new message is rendered for a sample member first.

A journey that is switched off can be deleted: its campaign is cancelled and kept with its records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from handlers.campaigns import audience, content, manage
from handlers.campaigns.manage import Draft
from handlers.campaigns.sending import CAMPAIGN_SEND
from handlers.core import audit_log, queries
from handlers.core.errors import Conflict, Forbidden, NotFound, ValidationError
from handlers.core.tasks import Effects, Queued
from handlers.rules import campaigns as rules
from models.campaign import Campaign, CampaignState, Journey, JourneyTrigger
from models.merchant import Merchant

TICK_LIMIT = 5000  # members a journey takes in one minute

_DUE_SQL = {
    JourneyTrigger.DAYS_AFTER_REGISTRATION: """
SELECT m.id FROM member m
 WHERE m.merchant_id = :merchant AND m.anonymized_at IS NULL AND m.blocked_at IS NULL
   AND m.registered_at + make_interval(days => :days) > :since
   AND m.registered_at + make_interval(days => :days) <= :now
   AND NOT EXISTS (SELECT 1 FROM campaign_recipient r WHERE r.campaign_id = :campaign AND r.member_id = m.id)
 ORDER BY m.id LIMIT :limit
""",
    JourneyTrigger.DAYS_AFTER_FIRST_PURCHASE: """
SELECT f.member_id AS id FROM (
    SELECT member_id, min(created_at) AS first_at FROM purchase
     WHERE merchant_id = :merchant AND status = 'completed' GROUP BY member_id
) AS f
  JOIN member m ON m.id = f.member_id AND m.anonymized_at IS NULL AND m.blocked_at IS NULL
 WHERE f.first_at + make_interval(days => :days) > :since
   AND f.first_at + make_interval(days => :days) <= :now
   AND NOT EXISTS (SELECT 1 FROM campaign_recipient r
                    WHERE r.campaign_id = :campaign AND r.member_id = f.member_id)
 ORDER BY f.member_id LIMIT :limit
""",
}
_INSERT_SQL = """
INSERT INTO campaign_recipient (campaign_id, merchant_id, member_id, channel, status, reason, attempts,
                                created_at, updated_at)
SELECT :campaign, :merchant, v.member_id, :channel, v.status, '', 0, :now, :now
  FROM unnest(:members::int[], :statuses::text[]) AS v(member_id, status)
ON CONFLICT (campaign_id, member_id) DO NOTHING
RETURNING member_id
"""


@dataclass(frozen=True, slots=True)
class JourneyDraft:
    name: str
    trigger: str
    days: int
    segment_id: int | None
    message: Draft  # channel, content, holdout, attachment, throttle of what is sent


async def _check(merchant: Merchant, draft: JourneyDraft) -> JourneyTrigger:
    if draft.trigger not in JourneyTrigger.__members__.values():
        raise ValidationError(
            "trigger：触发条件须为 enters_segment、days_after_registration 或 days_after_first_purchase",
            field="trigger",
        )
    trigger = JourneyTrigger(draft.trigger)
    if trigger == JourneyTrigger.ENTERS_SEGMENT and draft.segment_id is None:
        raise ValidationError("segment_id：“进入分群”触发须指定分群", field="segment_id")
    await audience.check_segment(merchant.id, draft.segment_id)
    if not 0 <= draft.days <= 365:
        raise ValidationError("days：天数须在 0–365 之间", field="days")
    return trigger


async def create(merchant: Merchant, draft: JourneyDraft, *, actor: str) -> Journey:
    trigger = await _check(merchant, draft)
    async with in_transaction():
        campaign = await manage.create(merchant, draft.message, actor=actor)
        journey = await Journey.create(
            merchant_id=merchant.id,
            name=draft.name.strip()[:64] or campaign.name,
            trigger=trigger,
            segment_id=draft.segment_id,
            days=draft.days,
            campaign_id=campaign.id,
        )
        await Campaign.filter(id=campaign.id).update(journey_id=journey.id)
        await audit_log.record(merchant.id, actor, "journey.create", str(journey.id), trigger=trigger.value)
    return journey


async def update(
    merchant: Merchant,
    journey_id: int,
    draft: JourneyDraft,
    *,
    actor: str,
    now: datetime,
    live_allowed: bool = True,
) -> Journey:
    """Edit a journey (see the module's docstring for what happens to members already due). Without
    `live_allowed` (a manager) only a journey that is switched off may change."""
    trigger = await _check(merchant, draft)
    values = await manage.checked(merchant, draft.message)
    async with in_transaction():
        journey = await Journey.select_for_update().get_or_none(id=journey_id, merchant_id=merchant.id)
        if journey is None:
            raise NotFound("没有这个自动化旅程", field="journey_id")
        campaign = await Campaign.select_for_update().get(id=journey.campaign_id)
        if journey.active and not live_allowed:
            raise Forbidden("旅程启用中，只有管理员可以修改；请管理员修改或先停用", field="active")
        if journey.active:
            await _check_live(merchant, campaign, values)
            values["validated_at"] = now
        retriggered = (trigger, draft.days, draft.segment_id) != (
            journey.trigger,
            journey.days,
            journey.segment_id,
        )
        name = draft.name.strip()[:64] or values["name"]
        changed = {
            field: [str(old), str(new)]
            for field, old, new in (
                ("name", journey.name, name),
                ("trigger", journey.trigger.value, trigger.value),
                ("days", journey.days, draft.days),
                ("segment_id", journey.segment_id, draft.segment_id),
            )
            if old != new
        }
        since = {"active_since": now} if journey.active and retriggered else {}
        await Journey.filter(id=journey.id).update(
            name=name, trigger=trigger, days=draft.days, segment_id=draft.segment_id, updated_at=now, **since
        )
        await Campaign.filter(id=campaign.id).update(**values, updated_at=now)
        if since:
            await _baseline(await Journey.get(id=journey.id), campaign, now)
        await audit_log.record(
            merchant.id,
            actor,
            "journey.update",
            str(journey.id),
            **changed,
            message=values["name"],
            retriggered=bool(since),
        )
    return await get(merchant, journey_id)


async def _check_live(merchant: Merchant, campaign: Campaign, values: dict[str, Any]) -> None:
    """A journey that is on keeps its channel, and its new message must render for a sample member."""
    if values["channel"] != campaign.channel:
        raise Conflict("旅程启用中不能更换渠道，请先停用", field="message.channel")
    channel: rules.Channel = values["channel"].value
    content.render_for(channel, values["content"], await manage.sample_context(merchant, campaign))


async def get(merchant: Merchant, journey_id: int) -> Journey:
    journey = await Journey.get_or_none(id=journey_id, merchant_id=merchant.id)
    if journey is None:
        raise NotFound("没有这个自动化旅程", field="journey_id")
    return journey


async def set_active(
    merchant: Merchant, journey_id: int, active: bool, *, actor: str, now: datetime
) -> Journey:
    """Switch a journey on (its content is checked for a sample member first) or off."""
    journey = await get(merchant, journey_id)
    campaign = await Campaign.get(id=journey.campaign_id)
    if active:
        channel: rules.Channel = campaign.channel.value
        content.check(channel, campaign.content, campaign.template_id)
        content.render_for(channel, campaign.content, await manage.sample_context(merchant, campaign))
    if active == journey.active:
        raise Conflict("旅程已经是这个状态", field="active")
    async with in_transaction():
        if await Journey.select_for_update().get_or_none(id=journey.id) is None:  # deleted meanwhile
            raise NotFound("没有这个自动化旅程", field="journey_id")
        await Journey.filter(id=journey.id).update(
            active=active, active_since=now if active else None, updated_at=now
        )
        if active:
            await _baseline(journey, campaign, now)
        state = CampaignState.SENDING if active else CampaignState.PAUSED
        await Campaign.filter(id=campaign.id).update(
            state=state, planned=True, validated_at=now, started_at=campaign.started_at or now, updated_at=now
        )
        await audit_log.record(
            merchant.id, actor, "journey.activate" if active else "journey.deactivate", str(journey.id)
        )
    return await get(merchant, journey_id)


async def delete(merchant: Merchant, journey_id: int, *, actor: str, now: datetime) -> None:
    """Delete a journey that is switched off. Its message's campaign is cancelled (members due but not
    yet claimed are skipped, `cancelled`) and kept with its recipient records, which still count
    against the marketing caps; the segment it triggered on is free to delete afterwards."""
    async with in_transaction():
        journey = await Journey.select_for_update().get_or_none(id=journey_id, merchant_id=merchant.id)
        if journey is None:
            raise NotFound("没有这个自动化旅程", field="journey_id")
        if journey.active:
            raise Conflict("旅程启用中，请先停用再删除", field="active")
        await manage.stop_for_good(journey.campaign_id, now)
        await Journey.filter(id=journey.id).delete()
        await audit_log.record(
            merchant.id,
            actor,
            "journey.delete",
            str(journey.id),
            name=journey.name,
            campaign=str(journey.campaign_id),
        )


_BASELINE_SQL = """
INSERT INTO campaign_recipient (campaign_id, merchant_id, member_id, channel, status, reason, attempts,
                                created_at, updated_at)
SELECT :campaign, :merchant, v.member_id, :channel, 'skipped', 'in_segment_at_start', 0, :now, :now
  FROM unnest(:members::int[]) AS v(member_id)
ON CONFLICT (campaign_id, member_id) DO NOTHING
"""


async def _baseline(journey: Journey, campaign: Campaign, now: datetime) -> None:
    """The members in the segment when the journey is switched on: not "entering", never messaged."""
    if journey.trigger != JourneyTrigger.ENTERS_SEGMENT or journey.segment_id is None:
        return
    async for page in audience.iter_member_ids(journey.merchant_id, journey.segment_id, batch=5000):
        await queries.fetch_rows(
            _BASELINE_SQL,
            campaign=campaign.id,
            merchant=campaign.merchant_id,
            channel=campaign.channel.value,
            members=page,
            now=now,
        )


async def _due(journey: Journey, campaign: Campaign, now: datetime) -> list[int]:
    if journey.trigger == JourneyTrigger.ENTERS_SEGMENT:
        if journey.segment_id is None:
            return []
        source, where, params = await audience.segment_where(journey.merchant_id, journey.segment_id)
        sql = (
            f"SELECT {audience.MEMBER_ID} AS id FROM {source} WHERE {where} AND NOT EXISTS ("  # noqa: S608 - compiled, values bound
            f" SELECT 1 FROM campaign_recipient r WHERE r.campaign_id = :campaign"
            f" AND r.member_id = {audience.MEMBER_ID}) ORDER BY {audience.MEMBER_ID} LIMIT :limit"
        )
        rows = await queries.fetch_rows(sql, **params, campaign=campaign.id, limit=TICK_LIMIT)
    else:
        rows = await queries.fetch_rows(
            _DUE_SQL[journey.trigger],
            merchant=journey.merchant_id,
            days=journey.days,
            since=journey.active_since,
            now=now,
            campaign=campaign.id,
            limit=TICK_LIMIT,
        )
    return [int(row["id"]) for row in rows]


async def tick(effects: Effects, now: datetime) -> int:
    """Members whose journey event fell due: their rows and a send task. How many were taken."""
    taken = 0
    for journey in await Journey.filter(active=True, active_since__not_isnull=True):
        campaign = await Campaign.get(id=journey.campaign_id)
        members = await _due(journey, campaign, now)
        if not members:
            continue
        statuses = [
            "holdout" if rules.in_holdout(campaign.id, m, campaign.holdout_pct) else "pending"
            for m in members
        ]
        queued: Queued | None = None
        async with in_transaction():
            inserted = await queries.fetch_rows(
                _INSERT_SQL,
                campaign=campaign.id,
                merchant=campaign.merchant_id,
                channel=campaign.channel.value,
                members=members,
                statuses=statuses,
                now=now,
            )
            if inserted:
                queued = await effects.queue(
                    CAMPAIGN_SEND,
                    f"journey:{campaign.id}:{members[0]}:{members[-1]}:{int(now.timestamp())}",
                    {"campaign_id": campaign.id, "lo": members[0], "hi": members[-1]},
                    merchant_id=campaign.merchant_id,
                )
        if queued is not None:
            await effects.after_commit(queued)
        taken += len(inserted)
    return taken


async def campaigns_job(now: datetime, effects: Effects) -> dict[str, int]:
    """The minute cron `campaigns`: scheduled campaigns whose time has come start; journeys take the
    members whose event fell due."""
    return {"started": await manage.start_due(effects, now), "journey_members": await tick(effects, now)}
