"""Sending queued notices, many at a time: at most once per (event, member), on the first channel
WeChat's rules allow, with a record of what happened.

`deliver` takes delivery records (one, or a batch of the tasks that carry them) and:

1. loads them with their members, merchants and the kinds' saved settings in one query;
2. leaves a record already sent, failed or skipped alone; skips (with the reason) what is switched off
   or for an erased member; defers what is not urgent to the end of the merchant's quiet hours;
3. sends the rest in rounds: each takes the first channel that can reach its member
   (`handlers.rules.notices.choose`), takes a call slot for each record (IN_FLIGHT a process), marks
   the round's records `sending` in one UPDATE (committed; a record another runner moved first is not
   sent), runs the calls to WeChat side by side, and writes their outcomes in one UPDATE. Accepted:
   `sent`. A refusal that is the member's (43004 not following, 40003, 43101 no grant, 45015 outside
   the window, 47003/40037 a bad template): the refusal is recorded and the record goes to the next
   round with the channels after that one; none left: `failed` with the errcode. WeChat busy (45009,
   -1, 5xx): back to `queued`, and its task retries with backoff.
4. A record found `sending` (its process died mid-send) is never sent twice: a template message is
   sent again with the same `client_msg_id` (WeChat keeps one per id for ten minutes); any other
   channel is marked `failed` (`outcome_unknown`).

Every status change is guarded by the status it leaves (`queued`/`deferred`, or `sending`), so two
runners never both send a record (`handlers.notices.records`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from handlers.core.tasks import Deferred
from handlers.notices import reach
from handlers.notices.records import Mark, Notice, load, mark
from handlers.notices.settings import render_body, render_fields
from handlers.rules.notices import Channel, Reach, choose, quiet_until
from handlers.wechat import errors as wechat_errors
from handlers.wechat.client import WeChatClient, mp_credentials, oa_credentials
from models.notice import DeliveryStatus

log = logging.getLogger(__name__)
# The member's own state, not WeChat's load: that channel cannot carry it, the next one may.
REFUSALS = (
    wechat_errors.RequireSubscribe,
    wechat_errors.InvalidOpenid,
    wechat_errors.SubscribeRefused,
    wechat_errors.OutOfResponseWindow,
    wechat_errors.InvalidTemplate,
    wechat_errors.InvalidArgument,
    wechat_errors.WeChatNotConfigured,
)
FINAL = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED)
# A record's outcome for its caller: the send's result (done), or how it ended (`Deferred`, or a
# WeChat error to retry after a backoff).
Outcome = dict[str, Any] | None | Exception


SEND_BATCH = 50  # records loaded and marked together
IN_FLIGHT = 100  # WeChat calls a process has under way at most


@dataclass(frozen=True, slots=True)
class NoticeServices:
    """What sending needs from the process: the WeChat client, the Redis holding the windows, and its
    IN_FLIGHT call slots. A batch takes a slot for each of its records before marking them `sending`
    (one batch taking at a time, so none waits holding part of what it needs), so a record marked
    `sending` is handed to WeChat at once."""

    wechat: WeChatClient
    redis: Redis
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(IN_FLIGHT))
    taking: asyncio.Lock = field(default_factory=asyncio.Lock)


async def deliver(services: NoticeServices, keys: Mapping[int, int], now: datetime) -> dict[int, Outcome]:
    """Send the delivery records `keys` names (the caller's key → delivery id), in batches of up to
    SEND_BATCH side by side: each key's outcome."""
    outcomes: dict[int, Outcome] = dict.fromkeys(keys)
    items = list(keys.items())
    batches = [dict(items[start : start + SEND_BATCH]) for start in range(0, len(items), SEND_BATCH)]
    await asyncio.gather(*(_deliver_now(services, batch, now, outcomes) for batch in batches))
    return outcomes


async def _take_slots(services: NoticeServices, count: int) -> None:
    """`count` call slots (count <= IN_FLIGHT), waiting for calls under way to end."""
    taken = 0
    try:
        async with services.taking:
            while taken < count:
                await services.slots.acquire()
                taken += 1
    except BaseException:
        for _ in range(taken):
            services.slots.release()
        raise


async def _deliver_now(
    services: NoticeServices, keys: Mapping[int, int], now: datetime, outcomes: dict[int, Outcome]
) -> None:
    marks: list[Mark] = []
    ready: list[Notice] = []
    resuming: list[Notice] = []
    for notice in await load(keys):
        delivery = notice.delivery
        if delivery.status in FINAL:
            continue
        if delivery.status == DeliveryStatus.SENDING:
            resuming.append(notice)
        elif not notice.config.enabled:
            marks.append(Mark(delivery.id, DeliveryStatus.SKIPPED, False, reason="switched_off"))
        elif notice.member.anonymized:
            marks.append(Mark(delivery.id, DeliveryStatus.SKIPPED, False, reason="member_erased"))
        elif (until := _quiet_until(notice, now)) is not None:
            marks.append(
                Mark(delivery.id, DeliveryStatus.DEFERRED, False, reason="quiet_hours", run_after=until)
            )
            outcomes[notice.key] = Deferred(until)
        else:
            ready.append(notice)
    await mark(marks, now)
    resumed = await asyncio.gather(*(_resume(services, notice, now) for notice in resuming))
    outcomes.update(zip((notice.key for notice in resuming), resumed, strict=True))
    while ready:
        ready = await _round(services, ready, now, outcomes)


def _quiet_until(notice: Notice, now: datetime) -> datetime | None:
    if notice.config.kind.urgent:
        return None
    return quiet_until(now, notice.merchant.timezone, notice.merchant.quiet)


async def _round(
    services: NoticeServices, notices: list[Notice], now: datetime, outcomes: dict[int, Outcome]
) -> list[Notice]:
    """Send each notice on the first channel left that reaches its member; the ones a refusal sends to
    the next round."""
    known = [_template_choice(notice) for notice in notices]
    looked_up = iter(
        await asyncio.gather(
            *(_choose(services, n, now) for n, k in zip(notices, known, strict=True) if k is None),
            return_exceptions=True,
        )
    )
    chosen = [next(looked_up) if k is None else k for k in known]
    marks: list[Mark] = []
    going: list[Notice] = []
    for notice, choice in zip(notices, chosen, strict=True):
        if isinstance(choice, Exception):  # Redis or the database failed it: its task retries
            outcomes[notice.key] = choice
            continue
        if isinstance(choice, BaseException):  # cancelled
            raise choice
        channel, reasons = choice
        notice.passed += reasons
        if channel is None:
            final = DeliveryStatus.FAILED if notice.errcode is not None else DeliveryStatus.SKIPPED
            reason = ";".join(notice.passed) or "no_channel"
            marks.append(Mark(notice.delivery.id, final, False, errcode=notice.errcode, reason=reason))
            continue
        notice.order = notice.order[notice.order.index(channel) + 1 :]
        notice.channel = channel
        marks.append(Mark(notice.delivery.id, DeliveryStatus.SENDING, False, channel=channel))
        going.append(notice)
    await _take_slots(services, len(going))
    held = len(going)
    try:
        moved = await mark(marks, now)
        going = [notice for notice in going if notice.delivery.id in moved]  # the rest: another runner's
        for _ in range(held - len(going)):
            services.slots.release()
        held = len(going)
        for notice in going:  # grants go to the older notices first, as they would one at a time
            if notice.channel == "subscribe":
                notice.granted = await reach.use_grant(notice.member.id, notice.config.subscribe_template_id)
    except BaseException:
        for _ in range(held):
            services.slots.release()
        raise
    attempts = await asyncio.gather(*(_attempt_in_slot(services, notice, outcomes) for notice in going))
    await mark([done for done, _ in attempts], now)
    return [notice for notice, (_, again) in zip(going, attempts, strict=True) if again]


async def _attempt_in_slot(
    services: NoticeServices, notice: Notice, outcomes: dict[int, Outcome]
) -> tuple[Mark, bool]:
    try:
        return await _attempt(services, notice, outcomes)
    finally:
        services.slots.release()


def _template_choice(notice: Notice) -> tuple[Channel | None, tuple[str, ...]] | None:
    """What `_choose` answers when no lookup can change it: a template message comes first among the
    channels left and reaches the member (the usual receipt), or no channel is left; else None."""
    if not notice.order:
        return None, ()
    member = notice.member
    if notice.order[0] == "template" and notice.config.template_id and member.subscribed and member.openid:
        return "template", ()
    return None


async def _choose(
    services: NoticeServices, notice: Notice, now: datetime
) -> tuple[Channel | None, tuple[str, ...]]:
    """The first channel left that reaches the member. The 48-hour window (a Redis read) matters only to
    the customer-service channel, so it is read only when no channel before that one reaches the member."""
    member, config = notice.member, replace(notice.config, channels=notice.order)
    if not config.channels:
        return None, ()
    oa_openid = member.openid if member.subscribed else None
    grants = (
        await reach.unused_grants(member.id, config.subscribe_template_id)
        if config.subscribe_template_id and "subscribe" in config.channels and member.mp_openid
        else 0
    )
    known = Reach(oa_openid, member.mp_openid, grants, None, 0)
    channel, reasons = choose(config.channel_config, known, now)
    if channel is None and "custom" in config.channels and oa_openid:
        opened, sent = await reach.window(services.redis, notice.merchant.id, oa_openid)
        known = replace(known, window_opened_at=opened, window_sent=sent)
        channel, reasons = choose(config.channel_config, known, now)
    return channel, reasons


class _GrantTaken(Exception):
    """The subscribe grant counted when the channel was chosen went to a concurrent send."""


async def _attempt(
    services: NoticeServices, notice: Notice, outcomes: dict[int, Outcome]
) -> tuple[Mark, bool]:
    """One send on the notice's channel: how to mark its record, and whether to try the next channel."""
    channel, delivery_id = notice.channel, notice.delivery.id
    try:
        msgid, text = await _call(services, notice)
    except _GrantTaken:  # a concurrent send took the member's last grant: as if there was none
        notice.passed.append("subscribe:no_subscribe_grant")
        return _requeue(notice), True
    except REFUSALS as exc:
        errcode = getattr(exc, "errcode", None)
        notice.passed.append(f"{channel}:{errcode or type(exc).__name__}")
        if isinstance(exc, wechat_errors.SubscribeRefused):
            await reach.no_grants_left(notice.member.id, notice.config.subscribe_template_id)
        notice.errcode = errcode
        return _requeue(notice, errcode=errcode), True
    except wechat_errors.WeChatError as exc:  # busy, rate-limited, unavailable: WeChat did not take it
        outcomes[notice.key] = exc
        return _requeue(notice), False
    except Exception as exc:  # ours (e.g. a field that cannot render for this data): never retried
        log.exception("notice not sent", extra={"delivery_id": delivery_id, "kind": notice.delivery.kind})
        reason = ";".join([*notice.passed, f"{channel}:{type(exc).__name__}"])
        return Mark(delivery_id, DeliveryStatus.FAILED, True, channel=channel, reason=reason), False
    outcomes[notice.key] = {"channel": channel, "msgid": msgid}
    sent = Mark(
        delivery_id,
        DeliveryStatus.SENT,
        True,
        channel=channel,
        msgid=msgid,
        text=text,
        reason=";".join(notice.passed),
        errcode=notice.errcode,
    )
    return sent, False


def _requeue(notice: Notice, *, errcode: int | None = None) -> Mark:
    """A send that did not happen: the record goes back to `queued` with the reasons so far, for the next
    channel or a retry."""
    reason = ";".join(notice.passed)
    return Mark(
        notice.delivery.id,
        DeliveryStatus.QUEUED,
        True,
        channel=notice.channel,
        errcode=errcode,
        reason=reason,
    )


async def _call(
    services: NoticeServices, notice: Notice, channel: Channel | None = None
) -> tuple[str | None, str]:
    """One send on `channel` (default: the notice's): (WeChat's msgid if any, the text as the member
    sees it)."""
    wechat, member, merchant, config = services.wechat, notice.member, notice.merchant, notice.config
    channel = channel or notice.channel
    if channel == "template":
        data = render_fields(config.template_fields, notice.context)
        msgid = await wechat.send_template(
            oa_credentials(merchant),
            member.openid or "",
            config.template_id,
            data,
            url=config.template_url or None,
            client_msg_id=f"notice-{notice.delivery.id}",
        )
        return str(msgid), " / ".join(data.values())
    if channel == "subscribe":
        if not notice.granted:
            raise _GrantTaken
        data = render_fields(config.subscribe_fields, notice.context)
        await wechat.send_subscribe(
            mp_credentials(merchant),
            member.mp_openid or "",
            config.subscribe_template_id,
            data,
            page=config.subscribe_page or None,
        )
        return None, " / ".join(data.values())
    text = render_body(config.body, notice.context)
    await wechat.send_custom_text(oa_credentials(merchant), member.openid or "", text)
    await reach.window_used(services.redis, merchant.id, member.openid or "")
    return None, text


async def _resume(services: NoticeServices, notice: Notice, now: datetime) -> Outcome:
    """A send was under way when its process died. Only a template message can be repeated safely;
    WeChat busy (or anything else failing): tried again when its task retries."""
    try:
        return await _resume_one(services, notice, now)
    except Exception as exc:
        return exc


async def _resume_one(services: NoticeServices, notice: Notice, now: datetime) -> Outcome:
    delivery = notice.delivery
    if delivery.channel != "template" or not notice.member.openid:
        await mark(
            [
                Mark(
                    delivery.id,
                    DeliveryStatus.FAILED,
                    True,
                    channel=delivery.channel,
                    reason="outcome_unknown",
                )
            ],
            now,
        )
        return None
    try:
        msgid, text = await _call(services, notice, "template")
    except wechat_errors.DuplicateClientMsgId as exc:  # WeChat has it already
        msgid, text = (str(exc.msgid) if exc.msgid else None), ""
    except REFUSALS as exc:
        errcode = getattr(exc, "errcode", None)
        refused = Mark(
            delivery.id,
            DeliveryStatus.FAILED,
            True,
            channel="template",
            errcode=errcode,
            reason="template refused on resume",
        )
        await mark([refused], now)
        return None
    await mark(
        [Mark(delivery.id, DeliveryStatus.SENT, True, channel="template", msgid=msgid, text=text)], now
    )
    return {"channel": "template", "msgid": msgid}
