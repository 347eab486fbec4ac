"""Sending a campaign: the `campaign.plan` and `campaign.send` tasks of the durable queue.

`campaign.plan` streams the audience (keyset pages) into `campaign_recipient` rows — `holdout` for the
campaign's random share, else `pending` — and queues one `campaign.send` task per page, in the page's
transaction (the plan's cursor moves with it, so a crashed plan resumes where it stopped). The tasks
become arq jobs, so N worker processes share one campaign.

`campaign.send` owns one member range. It first re-tries the range's `sending` rows (a crash, or a
"try again" answer), then claims pending rows chunk by chunk through the governor (budget taken, the
attempt recorded before the call), sends them concurrently within the campaign's throttle (messages a
second, shared by every worker through Redis) and records the outcomes in one statement per chunk.
Never twice: `(campaign, member)` is unique, a row is claimed by one transaction, and a resend after a
crash carries the same anti-replay id (mass `clientmsgid`; subscribe `client_msg_id`), so WeChat (the
simulator) answers 45065 instead of delivering again. Customer-service messages and SMS have no such
id: one in flight at a crash ends `failed` (`outcome_unknown`), never repeated.

WeChat's 45009 / busy / 5xx leave the row `sending` for a retry after a backoff (`rules.retry_delay`,
at most `rules.MAX_ATTEMPTS` tries); 43004, 40003, 43101 and the like fail it. Quiet hours defer the
task to their end. A paused or cancelled campaign stops at the next chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from tortoise.transactions import in_transaction

from handlers.campaigns import attachments, audience, content, governor
from handlers.campaigns.governor import Claimed
from handlers.campaigns.sms import SmsProvider, SmsUnavailable
from handlers.core import queries
from handlers.core.errors import ValidationError
from handlers.core.tasks import Deferred, Effects, Queued
from handlers.notices import reach
from handlers.rules import campaigns as rules
from handlers.rules.campaigns import Caps
from handlers.rules.notices import QuietHours, quiet_until
from handlers.wechat import errors as wechat_errors
from handlers.wechat.client import WeChatClient, mp_credentials, oa_credentials
from models.campaign import Campaign, CampaignChannel, CampaignState, MassJob
from models.merchant import Merchant

log = logging.getLogger(__name__)
CAMPAIGN_PLAN = "campaign.plan"
CAMPAIGN_SEND = "campaign.send"
SEND_BATCH = 500  # members per send task
CHUNK = 200  # claimed per transaction
CONCURRENCY = 64  # calls in flight per process, however many send tasks it runs side by side
TIME_BOX = 60.0  # seconds a send task works before it hands the rest of its range to a new turn


@dataclass(frozen=True, slots=True)
class CampaignServices:
    wechat: WeChatClient
    redis: Redis
    sms: SmsProvider


_IN_FLIGHT: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def in_flight() -> asyncio.Semaphore:
    """The process's budget of calls in flight (per event loop): ten send tasks side by side share it,
    so a worker never floods WeChat (or times its own calls out) with 64 × 10 requests at once."""
    loop = asyncio.get_running_loop()
    if loop not in _IN_FLIGHT:
        _IN_FLIGHT[loop] = asyncio.Semaphore(CONCURRENCY)
    return _IN_FLIGHT[loop]


def batch_size(channel: CampaignChannel) -> int:
    return rules.MASS_MAX_OPENIDS if channel == CampaignChannel.MASS else SEND_BATCH


# -- plan -----------------------------------------------------------------------------------------------

_PLAN_PAGE_SQL = """
INSERT INTO campaign_recipient (campaign_id, merchant_id, member_id, channel, status, reason, attempts,
                                created_at, updated_at)
SELECT :campaign, :merchant, v.member_id, :channel, v.status, '', 0, :now, :now
  FROM unnest(:members::int[], :statuses::text[]) AS v(member_id, status)
ON CONFLICT (campaign_id, member_id) DO NOTHING
"""


def send_key(campaign: Campaign, lo: int) -> str:
    return f"campaign:{campaign.id}:{campaign.resumes}:{lo}"


async def queue_send(effects: Effects, campaign: Campaign, lo: int, hi: int) -> Queued:
    return await effects.queue(
        CAMPAIGN_SEND,
        send_key(campaign, lo),
        {"campaign_id": campaign.id, "lo": lo, "hi": hi},
        merchant_id=campaign.merchant_id,
    )


async def plan(effects: Effects, payload: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    campaign = await Campaign.get(id=payload["campaign_id"])
    pages = 0
    while True:
        if campaign.state != CampaignState.SENDING or campaign.planned:
            return {"pages": pages}
        page = await _next_page(campaign)
        if not page:
            break
        statuses = [
            "holdout" if rules.in_holdout(campaign.id, m, campaign.holdout_pct) else "pending" for m in page
        ]
        async with in_transaction():
            await queries.fetch_rows(
                _PLAN_PAGE_SQL,
                campaign=campaign.id,
                merchant=campaign.merchant_id,
                channel=campaign.channel.value,
                members=page,
                statuses=statuses,
                now=now,
            )
            queued = await queue_send(effects, campaign, page[0], page[-1])
            moved = await Campaign.filter(id=campaign.id, state=CampaignState.SENDING).update(
                plan_cursor=page[-1], updated_at=now
            )
        await effects.after_commit(queued)
        pages += 1
        if not moved:  # paused or cancelled meanwhile: the next run (a resume) goes on from the cursor
            return {"pages": pages}
        campaign = await Campaign.get(id=campaign.id)
    await Campaign.filter(id=campaign.id).update(planned=True, updated_at=now)
    await finish_if_done(campaign.id, now)
    return {"pages": pages}


async def _next_page(campaign: Campaign) -> list[int]:
    async for page in audience.iter_member_ids(
        campaign.merchant_id,
        campaign.segment_id,
        after=campaign.plan_cursor,
        batch=batch_size(campaign.channel),
    ):
        return page
    return []


_FINISH_SQL = """
UPDATE campaign SET state = 'done', finished_at = :now, updated_at = :now
 WHERE id = :campaign AND state = 'sending' AND planned AND journey_id IS NULL
   AND NOT EXISTS (SELECT 1 FROM campaign_recipient
                    WHERE campaign_id = :campaign AND status IN ('pending', 'sending'))
RETURNING id
"""


async def finish_if_done(campaign_id: int, now: datetime) -> bool:
    return bool(await queries.fetch_rows(_FINISH_SQL, campaign=campaign_id, now=now))


# -- send -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    status: str  # sent | failed | retry
    reason: str = ""
    errcode: int | None = None
    msgid: str | None = None


_RECORD_SQL = """
UPDATE campaign_recipient r
   SET status = CASE WHEN v.status = 'retry' THEN 'sending' ELSE v.status END,
       reason = v.reason, errcode = v.errcode, msgid = v.msgid,
       sent_at = CASE WHEN v.status = 'sent' THEN :now::timestamptz END, updated_at = :now
  FROM unnest(:ids::bigint[], :statuses::text[], :reasons::text[], :errcodes::int[], :msgids::text[])
       AS v(id, status, reason, errcode, msgid)
 WHERE r.id = v.id AND r.status = 'sending'
"""


async def _record(outcomes: Mapping[int, Outcome], now: datetime) -> None:
    if not outcomes:
        return
    ids = list(outcomes)
    await queries.fetch_rows(
        _RECORD_SQL,
        ids=ids,
        statuses=[outcomes[i].status for i in ids],
        reasons=[outcomes[i].reason[:64] for i in ids],
        errcodes=[outcomes[i].errcode for i in ids],
        msgids=[outcomes[i].msgid for i in ids],
        now=now,
    )


def sender(services: CampaignServices | None) -> Any:
    """The `campaign.send` handler of a process with (or, e.g. a CLI, without) the senders."""

    async def send(effects: Effects, payload: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
        if services is None:
            raise RuntimeError("this process cannot send campaigns; a worker or the server does")
        return await _send(effects, services, payload, now)

    return send


async def _send(
    effects: Effects, services: CampaignServices, payload: Mapping[str, Any], now: datetime
) -> dict[str, Any] | None:
    campaign = await Campaign.get(id=payload["campaign_id"])
    if campaign.state != CampaignState.SENDING:
        return {"stopped": campaign.state.value}
    merchant = await Merchant.get(id=campaign.merchant_id)
    if (until := quiet_until(now, merchant.timezone, QuietHours(*merchant.quiet_hours))) is not None:
        raise Deferred(until)
    run = _Run(services, campaign, merchant, int(payload["lo"]), int(payload["hi"]), now)
    if not await run.go():
        turn = int(payload.get("turn", 0)) + 1
        async with in_transaction():
            queued = await effects.queue(
                CAMPAIGN_SEND,
                f"{send_key(campaign, int(payload['lo']))}:t{turn}",
                {**payload, "turn": turn},
                merchant_id=campaign.merchant_id,
            )
        await effects.after_commit(queued)
        return run.counts
    if run.retry_attempts:
        raise Deferred(now + rules.retry_delay(max(run.retry_attempts)))
    await finish_if_done(campaign.id, now)
    return run.counts


class _Run:
    """One turn of a send task over its member range."""

    def __init__(
        self,
        services: CampaignServices,
        campaign: Campaign,
        merchant: Merchant,
        lo: int,
        hi: int,
        now: datetime,
    ) -> None:
        self.services, self.campaign, self.merchant = services, campaign, merchant
        self.lo, self.hi, self.now = lo, hi, now
        self.channel: rules.Channel = campaign.channel.value
        self.render = content.renderer(self.channel, campaign.content)
        self.counts: dict[str, int] = {"sent": 0, "failed": 0, "skipped": 0, "retry": 0}
        self.retry_attempts: list[int] = []
        self.started = time.monotonic()

    async def go(self) -> bool:
        """Work the range; False when the time box ran out first (the rest is for a new turn)."""
        limit = batch_size(self.campaign.channel) if self.channel == "mass" else CHUNK
        resumed = await governor.resumed(
            self.campaign, self.lo, self.hi, self.now, batch_size(self.campaign.channel)
        )
        for start in range(0, len(resumed), limit):  # each once a turn (a retry waits for the next one)
            if not await self._still_sending():
                return True
            await self._deliver(resumed[start : start + limit])
        caps = await governor.caps_of(self.campaign.merchant_id)
        if self.channel == "mass":  # one call per claim, within the account's 60 a minute
            while await self._still_sending():
                await self._mass_budget()
                claim = await self._claim(limit, caps)
                if claim is None:
                    return True
                await self._deliver(claim.go)
            return True
        # The next chunk is claimed while this one is sent (its database work overlaps the calls); a
        # claimed chunk is always sent, so a stop leaves nothing claimed behind.
        upcoming = asyncio.create_task(self._claim(limit, caps))
        while True:
            claim = await upcoming
            if claim is None:
                return True
            going = await self._still_sending() and time.monotonic() - self.started <= TIME_BOX
            if going:
                upcoming = asyncio.create_task(self._claim(limit, caps))
            try:
                await self._deliver(claim.go)
            except BaseException:  # the next claim is rolled back, not left claimed and unsent
                upcoming.cancel()
                raise
            if not going:  # paused or cancelled (stop), or out of time (the rest in a new turn)
                return not await self._still_sending() or time.monotonic() - self.started <= TIME_BOX

    async def _claim(self, limit: int, caps: Caps) -> governor.Claim | None:
        claim = await governor.claim(
            self.campaign,
            self.services.redis,
            lo=self.lo,
            hi=self.hi,
            limit=limit,
            now=self.now,
            tz=self.merchant.timezone,
            caps=caps,
        )
        if claim is not None:
            for count in claim.skipped.values():
                self.counts["skipped"] += count
        return claim

    async def _still_sending(self) -> bool:
        return await Campaign.filter(id=self.campaign.id, state=CampaignState.SENDING).exists()

    async def _deliver(self, claimed: Sequence[Claimed]) -> None:
        if not claimed:
            return
        if self.channel == "mass":
            outcomes = await self._mass(claimed)
        else:
            outcomes = await self._each(claimed)
        for recipient in claimed:
            outcome = outcomes[recipient.recipient_id]
            if outcome.status == "retry" and recipient.attempts >= rules.MAX_ATTEMPTS:
                outcomes[recipient.recipient_id] = Outcome("failed", "retries_exhausted", outcome.errcode)
        sent = [r for r in claimed if outcomes[r.recipient_id].status == "sent"]
        await attachments.grant(self.campaign, self.merchant, sent, outcomes, self.now)
        await _record(outcomes, self.now)
        for recipient in claimed:
            outcome = outcomes[recipient.recipient_id]
            self.counts[outcome.status] += 1
            if outcome.status == "retry":
                self.retry_attempts.append(recipient.attempts)

    # -- one message per member --------------------------------------------------------------------------

    async def _each(self, claimed: Sequence[Claimed]) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        semaphore = in_flight()

        async def puller(queue: Iterator[Claimed]) -> None:
            for recipient in queue:  # one shared iterator: each recipient is taken by one puller
                async with semaphore:
                    outcomes[recipient.recipient_id] = await self._one(recipient)

        async for share in throttle(self.services.redis, self.campaign, claimed):
            # at most CONCURRENCY coroutines pulling from the share, not one task per recipient
            queue = iter(share)
            await asyncio.gather(*(puller(queue) for _ in range(min(CONCURRENCY, len(share)))))
        return outcomes

    async def _one(self, recipient: Claimed) -> Outcome:
        if recipient.resumed and not recipient.retry and self.channel in ("custom", "sms"):
            return Outcome("failed", "outcome_unknown")  # no anti-replay id: never sent twice
        context = content.member_context(
            name=recipient.name,
            code=recipient.code,
            points=recipient.points,
            merchant_name=self.merchant.name,
            campaign_name=self.campaign.name,
        )
        try:
            rendered = self.render(context)
        except ValidationError as exc:
            return Outcome("failed", f"content:{exc.field or 'invalid'}")
        try:
            return await self._call(recipient, rendered)
        except wechat_errors.DuplicateClientMsgId as exc:  # WeChat has it from the try before the crash
            return Outcome("sent", "resent_duplicate", msgid=str(exc.msgid) if exc.msgid else None)
        except SmsUnavailable:
            return Outcome("retry", "retry")
        except wechat_errors.WeChatError as exc:
            if rules.retried(exc.errcode):
                return Outcome("retry", "retry", exc.errcode)
            if isinstance(exc, wechat_errors.SubscribeRefused):
                await reach.no_grants_left(recipient.member_id, self.campaign.template_id)
            return Outcome("failed", f"wechat:{exc.errcode}", exc.errcode)
        except (wechat_errors.WeChatNotConfigured, wechat_errors.WeChatRequestInvalid) as exc:
            return Outcome("failed", f"not_sendable:{getattr(exc, 'field', '') or ''}")

    async def _call(self, recipient: Claimed, rendered: content.Rendered) -> Outcome:
        wechat, campaign = self.services.wechat, self.campaign
        if self.channel == "subscribe":
            page = campaign.content.get("page")
            await wechat.send_subscribe(
                mp_credentials(self.merchant),
                recipient.mp_openid or "",
                campaign.template_id,
                dict(rendered.fields or {}),
                page=page if isinstance(page, str) else None,
                client_msg_id=rules.client_msg_id(campaign.id, recipient.member_id),
            )
            return Outcome("sent")
        if self.channel == "custom":
            await wechat.send_custom_text(
                oa_credentials(self.merchant), recipient.openid or "", rendered.text
            )
            await reach.window_used(self.services.redis, self.merchant.id, recipient.openid or "")
            return Outcome("sent")
        result = await self.services.sms.send(
            recipient.phone or "", campaign.template_id, rendered.params, session=str(recipient.recipient_id)
        )
        if result.ok:
            return Outcome("sent", msgid=result.serial[:64] or None)
        return Outcome("failed", f"sms:{result.code}")

    # -- mass send -----------------------------------------------------------------------------------------

    async def _mass_budget(self) -> None:
        """WeChat takes 60 mass-send requests a minute per account (all campaigns, all workers)."""
        key = f"campaign:mass-rpm:{self.merchant.oa_appid}:{int(time.time() // 60)}"
        used = await self.services.redis.incr(key)
        if used == 1:
            await self.services.redis.expire(key, 120)
        if used > rules.MASS_REQUESTS_PER_MINUTE:
            raise Deferred(datetime.fromtimestamp((int(time.time() // 60) + 1) * 60, self.now.tzinfo))

    async def _mass(self, claimed: Sequence[Claimed]) -> dict[int, Outcome]:
        first = claimed[0].recipient_id
        if (refusal := self._mass_refusal(claimed)) is not None:
            return {r.recipient_id: Outcome("failed", refusal) for r in claimed}
        rendered = content.render_for(
            "mass",
            self.campaign.content,
            {"merchant_name": self.merchant.name, "campaign_name": self.campaign.name},
        )
        tag = self.campaign.content.get("wechat_tag_id")
        # To a tag, the campaign is ONE sendall: every batch after the first is answered 45065.
        client_msg_id = (
            f"c{self.campaign.id}-tag"
            if tag is not None
            else rules.mass_client_msg_id(self.campaign.id, first)
        )
        try:
            msg_id = await self.services.wechat.mass_send_text(
                oa_credentials(self.merchant),
                [r.openid or "" for r in claimed],
                rendered.text,
                client_msg_id=client_msg_id,
                tag_id=tag if isinstance(tag, int) else None,
            )
        except wechat_errors.DuplicateClientMsgId as exc:
            msg_id = exc.msgid or 0
        except wechat_errors.WeChatError as exc:
            status = "retry" if rules.retried(exc.errcode) else "failed"
            return {
                r.recipient_id: Outcome(
                    status, "retry" if status == "retry" else f"wechat:{exc.errcode}", exc.errcode
                )
                for r in claimed
            }
        await MassJob.get_or_create(
            client_msg_id=client_msg_id,
            defaults={
                "campaign_id": self.campaign.id,
                "merchant_id": self.merchant.id,
                "msg_id": str(msg_id),
                "recipients": len(claimed),
            },
        )
        return {r.recipient_id: Outcome("sent", msgid=str(msg_id)) for r in claimed}

    def _mass_refusal(self, claimed: Sequence[Claimed]) -> str | None:
        if self.campaign.content.get("wechat_tag_id") is None and len(claimed) < rules.MASS_MIN_OPENIDS:
            return "mass_needs_two_openids"
        return None


async def throttle(redis: Redis, campaign: Campaign, claimed: Sequence[Claimed]) -> Any:
    """Yield `claimed` in shares within `campaign.throttle_per_second` (a Redis counter per second)."""
    rest = list(claimed)
    limit = max(1, campaign.throttle_per_second)
    while rest:
        second = int(time.time())
        key = f"campaign:rate:{campaign.id}:{second}"
        want = min(len(rest), limit)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, want)
            pipe.expire(key, 3)
            total, _ = await pipe.execute()
        granted = max(0, min(want, limit - (int(total) - want)))
        if granted:
            yield rest[:granted]
            rest = rest[granted:]
        if rest:
            await asyncio.sleep(max(0.0, second + 1 - time.time()))
