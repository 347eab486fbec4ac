"""Sending queued notices, many at a time: at most once per (event, member), on the first channel
WeChat's rules allow, with a record of what happened.

`deliver` takes delivery records (one, or a batch of the tasks that carry them) and:

1. loads them with their members, merchants and the kinds' saved settings in one query;
2. leaves a record already sent, failed or skipped alone; skips (with the reason) what is switched off
   or for an erased member; defers what is not urgent to the end of the merchant's quiet hours;
3. sends the rest in rounds: each takes the first channel that can reach its member
   (`handlers.rules.notices.choose`), every record of the round is marked `sending` in one UPDATE
   (committed; a record another runner moved first is not sent), the calls to WeChat run side by side,
   and their outcomes are written in one UPDATE. Accepted: `sent`. A refusal that is the member's
   (43004 not following, 40003, 43101 no grant, 45015 outside the window, 47003/40037 a bad
   template): the refusal is recorded and the record goes to the next round with the channels after
   that one; none left: `failed` with the errcode. WeChat busy (45009, -1, 5xx): back to `queued`,
   and its task retries with backoff.
4. A record found `sending` (its process died mid-send) is never sent twice: a template message is
   sent again with the same `client_msg_id` (WeChat keeps one per id for ten minutes); any other
   channel is marked `failed` (`outcome_unknown`).

Every status change is guarded by the status it leaves (`queued`/`deferred`, or `sending`), so two
runners never both send a record.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time
from typing import Any

from redis.asyncio import Redis

from handlers.core import queries
from handlers.core.tasks import Deferred
from handlers.notices import reach
from handlers.notices.settings import Setting, render_body, render_fields, setting_of
from handlers.rules.notices import Channel, QuietHours, Reach, choose, quiet_until
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


SEND_BATCH = 50  # records loaded, marked and sent together
SEND_LANES = 2  # batches a process sends at once: at most SEND_BATCH × SEND_LANES calls in flight


@dataclass(frozen=True, slots=True)
class NoticeServices:
    """What sending needs from the process: the WeChat client, the Redis holding the windows, and the
    lanes its batches take turns in (a record is marked `sending` only once its lane is free, so it is
    handed to WeChat at once)."""

    wechat: WeChatClient
    redis: Redis
    lanes: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SEND_LANES))


@dataclass(slots=True)
class _Notice:
    """One record on its way, with what sending it needs and what happened so far."""

    key: int  # the caller's name for it (its task)
    delivery: _Record
    member: _Member
    merchant: _Merchant
    config: Setting
    context: dict[str, Any]
    order: tuple[Channel, ...]  # the channels not tried yet
    passed: list[str] = field(default_factory=list)  # why each channel tried did not carry it
    errcode: int | None = None  # the last refusal's
    channel: Channel | None = None  # this round's
    granted: bool = False  # this round took one of the member's subscribe grants


@dataclass(frozen=True, slots=True)
class _Mark:
    """Move a record to `status` if it is still `sending` (`from_sending`), else queued or deferred."""

    delivery_id: int
    status: DeliveryStatus
    from_sending: bool
    channel: str | None = None
    reason: str = ""
    errcode: int | None = None
    msgid: str | None = None
    text: str = ""
    run_after: datetime | None = None


_MARK_SQL = """
UPDATE notice_delivery d
   SET status = v.status, channel = v.channel, reason = v.reason, errcode = v.errcode, msgid = v.msgid,
       text = v.text, run_after = v.run_after, updated_at = :now,
       sent_at = CASE WHEN v.status = 'sent' THEN :now::timestamptz END
  FROM unnest(:ids::bigint[], :statuses::text[], :from_sending::bool[], :channels::text[], :reasons::text[],
              :errcodes::int[], :msgids::text[], :texts::text[], :run_afters::timestamptz[])
       AS v(id, status, from_sending, channel, reason, errcode, msgid, text, run_after)
 WHERE d.id = v.id
   AND d.status = ANY(CASE WHEN v.from_sending THEN ARRAY['sending'] ELSE ARRAY['queued', 'deferred'] END)
RETURNING d.id
"""


async def _mark(marks: Sequence[_Mark], now: datetime) -> set[int]:
    """Apply `marks` in one UPDATE; the ids of the records that moved (the others had moved on: a
    second runner)."""
    if not marks:
        return set()
    rows = await queries.fetch_rows(
        _MARK_SQL,
        ids=[m.delivery_id for m in marks],
        statuses=[m.status.value for m in marks],
        from_sending=[m.from_sending for m in marks],
        channels=[m.channel for m in marks],
        reasons=[m.reason[:255] for m in marks],
        errcodes=[m.errcode for m in marks],
        msgids=[m.msgid for m in marks],
        texts=[m.text for m in marks],
        run_afters=[m.run_after for m in marks],
        now=now,
    )
    return {int(row["id"]) for row in rows}


@dataclass(frozen=True, slots=True)
class _Record:
    """The delivery record, as far as sending goes."""

    id: int
    kind: str
    status: DeliveryStatus
    channel: str | None


@dataclass(frozen=True, slots=True)
class _Member:
    id: int
    openid: str | None
    subscribed: bool
    mp_openid: str | None
    anonymized: bool


@dataclass(frozen=True, slots=True)
class _Merchant:
    id: int
    timezone: str
    quiet: QuietHours
    oa_appid: str
    oa_secret: str
    mp_appid: str
    mp_secret: str


# The records, their members and merchants and the kinds' saved settings: one round trip, only the
# columns sending reads (building whole models cost more than the query).
_LOAD_SQL = """
SELECT d.id, d.kind, d.status, d.channel, d.context,
       m.id AS member_id, m.code AS member_code, m.name AS member_name, m.openid, m.subscribed, m.mp_openid,
       m.anonymized_at IS NOT NULL AS anonymized,
       c.id AS merchant_id, c.name AS merchant_name, c.timezone, c.quiet_start_minute, c.quiet_end_minute,
       c.oa_appid, c.oa_secret, c.mp_appid, c.mp_secret, s.settings AS saved_settings
  FROM notice_delivery d
  JOIN member m ON m.id = d.member_id
  JOIN merchant c ON c.id = d.merchant_id
  LEFT JOIN notice_setting s ON s.merchant_id = d.merchant_id AND s.kind = d.kind
 WHERE d.id = ANY(:ids::bigint[])
 ORDER BY d.id
"""


def _json(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str | bytes) else raw


def _minute(minute: int) -> time:
    return time(minute // 60, minute % 60)


async def _load(keys: Mapping[int, int]) -> list[_Notice]:
    """The records `keys` names (key → delivery id), as notices to send; missing ones left out. A
    batch's records mostly share a merchant and a kind: each is read once."""
    by_id: dict[int, list[int]] = {}
    for key, delivery_id in keys.items():
        by_id.setdefault(delivery_id, []).append(key)
    merchants: dict[int, _Merchant] = {}
    configs: dict[tuple[int, str], Setting] = {}
    notices = []
    for row in await queries.fetch_rows(_LOAD_SQL, ids=list(by_id)):
        merchant = merchants.get(row["merchant_id"])
        if merchant is None:
            quiet = QuietHours(_minute(row["quiet_start_minute"]), _minute(row["quiet_end_minute"]))
            merchant = merchants[row["merchant_id"]] = _Merchant(
                row["merchant_id"],
                row["timezone"],
                quiet,
                row["oa_appid"],
                row["oa_secret"],
                row["mp_appid"],
                row["mp_secret"],
            )
        config = configs.get((merchant.id, row["kind"]))
        if config is None:
            config = configs[merchant.id, row["kind"]] = setting_of(row["kind"], _json(row["saved_settings"]))
        record = _Record(row["id"], row["kind"], DeliveryStatus(row["status"]), row["channel"])
        member = _Member(
            row["member_id"], row["openid"], row["subscribed"], row["mp_openid"], row["anonymized"]
        )
        context = {
            **(_json(row["context"]) or {}),
            "member_name": row["member_name"] or "",
            "member_code": row["member_code"],
            "merchant_name": row["merchant_name"],
        }
        for key in by_id[record.id]:
            notices.append(_Notice(key, record, member, merchant, config, context, config.channels))
    return notices


async def deliver(services: NoticeServices, keys: Mapping[int, int], now: datetime) -> dict[int, Outcome]:
    """Send the delivery records `keys` names (the caller's key → delivery id), SEND_BATCH at a time in
    the process's lanes: each key's outcome."""
    outcomes: dict[int, Outcome] = dict.fromkeys(keys)
    items = list(keys.items())
    batches = [dict(items[start : start + SEND_BATCH]) for start in range(0, len(items), SEND_BATCH)]
    await asyncio.gather(*(_deliver_batch(services, batch, now, outcomes) for batch in batches))
    return outcomes


async def _deliver_batch(
    services: NoticeServices, keys: Mapping[int, int], now: datetime, outcomes: dict[int, Outcome]
) -> None:
    async with services.lanes:
        await _deliver_now(services, keys, now, outcomes)


async def _deliver_now(
    services: NoticeServices, keys: Mapping[int, int], now: datetime, outcomes: dict[int, Outcome]
) -> None:
    marks: list[_Mark] = []
    ready: list[_Notice] = []
    resuming: list[_Notice] = []
    for notice in await _load(keys):
        delivery = notice.delivery
        if delivery.status in FINAL:
            continue
        if delivery.status == DeliveryStatus.SENDING:
            resuming.append(notice)
        elif not notice.config.enabled:
            marks.append(_Mark(delivery.id, DeliveryStatus.SKIPPED, False, reason="switched_off"))
        elif notice.member.anonymized:
            marks.append(_Mark(delivery.id, DeliveryStatus.SKIPPED, False, reason="member_erased"))
        elif (until := _quiet_until(notice, now)) is not None:
            marks.append(
                _Mark(delivery.id, DeliveryStatus.DEFERRED, False, reason="quiet_hours", run_after=until)
            )
            outcomes[notice.key] = Deferred(until)
        else:
            ready.append(notice)
    await _mark(marks, now)
    resumed = await asyncio.gather(*(_resume(services, notice, now) for notice in resuming))
    outcomes.update(zip((notice.key for notice in resuming), resumed, strict=True))
    while ready:
        ready = await _round(services, ready, now, outcomes)


def _quiet_until(notice: _Notice, now: datetime) -> datetime | None:
    if notice.config.kind.urgent:
        return None
    return quiet_until(now, notice.merchant.timezone, notice.merchant.quiet)


async def _round(
    services: NoticeServices, notices: list[_Notice], now: datetime, outcomes: dict[int, Outcome]
) -> list[_Notice]:
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
    marks: list[_Mark] = []
    going: list[_Notice] = []
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
            marks.append(_Mark(notice.delivery.id, final, False, errcode=notice.errcode, reason=reason))
            continue
        notice.order = notice.order[notice.order.index(channel) + 1 :]
        notice.channel = channel
        marks.append(_Mark(notice.delivery.id, DeliveryStatus.SENDING, False, channel=channel))
        going.append(notice)
    moved = await _mark(marks, now)
    going = [notice for notice in going if notice.delivery.id in moved]  # the rest: another runner's
    for notice in going:  # grants go to the older notices first, as they would one at a time
        if notice.channel == "subscribe":
            notice.granted = await reach.use_grant(notice.member.id, notice.config.subscribe_template_id)
    attempts = await asyncio.gather(*(_attempt(services, notice, outcomes) for notice in going))
    await _mark([mark for mark, _ in attempts], now)
    return [notice for notice, (_, again) in zip(going, attempts, strict=True) if again]


def _template_choice(notice: _Notice) -> tuple[Channel | None, tuple[str, ...]] | None:
    """What `_choose` answers when no lookup can change it: a template message comes first among the
    channels left and reaches the member (the usual receipt), or no channel is left; else None."""
    if not notice.order:
        return None, ()
    member = notice.member
    if notice.order[0] == "template" and notice.config.template_id and member.subscribed and member.openid:
        return "template", ()
    return None


async def _choose(
    services: NoticeServices, notice: _Notice, now: datetime
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
    services: NoticeServices, notice: _Notice, outcomes: dict[int, Outcome]
) -> tuple[_Mark, bool]:
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
        return _Mark(delivery_id, DeliveryStatus.FAILED, True, channel=channel, reason=reason), False
    outcomes[notice.key] = {"channel": channel, "msgid": msgid}
    sent = _Mark(
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


def _requeue(notice: _Notice, *, errcode: int | None = None) -> _Mark:
    """A send that did not happen: the record goes back to `queued` with the reasons so far, for the next
    channel or a retry."""
    reason = ";".join(notice.passed)
    return _Mark(
        notice.delivery.id,
        DeliveryStatus.QUEUED,
        True,
        channel=notice.channel,
        errcode=errcode,
        reason=reason,
    )


async def _call(
    services: NoticeServices, notice: _Notice, channel: Channel | None = None
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


async def _resume(services: NoticeServices, notice: _Notice, now: datetime) -> Outcome:
    """A send was under way when its process died. Only a template message can be repeated safely;
    WeChat busy (or anything else failing): tried again when its task retries."""
    try:
        return await _resume_one(services, notice, now)
    except Exception as exc:
        return exc


async def _resume_one(services: NoticeServices, notice: _Notice, now: datetime) -> Outcome:
    delivery = notice.delivery
    if delivery.channel != "template" or not notice.member.openid:
        await _mark(
            [
                _Mark(
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
        refused = _Mark(
            delivery.id,
            DeliveryStatus.FAILED,
            True,
            channel="template",
            errcode=errcode,
            reason="template refused on resume",
        )
        await _mark([refused], now)
        return None
    await _mark(
        [_Mark(delivery.id, DeliveryStatus.SENT, True, channel="template", msgid=msgid, text=text)], now
    )
    return {"channel": "template", "msgid": msgid}
