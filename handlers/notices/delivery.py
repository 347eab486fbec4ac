"""Queue a notice with its cause, and send it: at most once per (event, member), on the first channel
WeChat's rules allow, with a record of what happened.

`queue_notice` inserts the delivery record (its unique key makes a repeated cause queue nothing) and
the `notice.send` task in the caller's transaction. The task:

1. does nothing for a record already sent, failed or skipped;
2. skips it (with the reason) when the kind is switched off, or the member is erased;
3. defers what is not urgent to the end of the merchant's quiet hours;
4. takes the first channel that can reach the member (`handlers.rules.notices.choose`), marks the
   record `sending` (committed) and calls WeChat. Accepted: `sent`. A refusal that is the member's
   (43004 not following, 40003, 43101 no grant, 45015 outside the window, 47003/40037 a bad
   template): that channel is recorded and the next one is tried; none left: `failed` with the
   errcode. WeChat busy (45009, -1, 5xx): back to `queued` and the task retries with backoff.
5. A crash after `sending` never sends twice: a template message is sent again with the same
   `client_msg_id` (WeChat keeps one per id for ten minutes); any other channel is marked
   `failed` (`outcome_unknown`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from redis.asyncio import Redis
from tortoise.models import Model
from tortoise.transactions import in_transaction

from handlers.core import queries
from handlers.core.tasks import Deferred, Effects, Handler, Queued
from handlers.notices import reach
from handlers.notices.settings import Setting, render_body, render_fields, setting_of
from handlers.rules.notices import Channel, QuietHours, Reach, choose, quiet_until
from handlers.wechat import errors as wechat_errors
from handlers.wechat.client import WeChatClient, mp_credentials, oa_credentials
from models.member import Member
from models.merchant import Merchant
from models.notice import DeliveryStatus, NoticeDelivery

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Model)
NOTICE_SEND = "notice.send"
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


@dataclass(frozen=True, slots=True)
class NoticeServices:
    """What sending needs from the process: the WeChat client and the Redis holding the windows."""

    wechat: WeChatClient
    redis: Redis


_QUEUE_SQL = """
INSERT INTO notice_delivery (merchant_id, member_id, kind, event_key, context, status, reason, job_status,
                             text, created_at, updated_at)
VALUES (:merchant, :member, :notice_kind, :event, :context, 'queued', '', '', '', :now, :now)
ON CONFLICT (merchant_id, kind, member_id, event_key) DO NOTHING
RETURNING id
"""


async def queue_notice(
    effects: Effects,
    kind: str,
    *,
    merchant_id: int,
    member_id: int,
    event_key: str,
    context: Mapping[str, Any],
) -> Queued | None:
    """Queue notice `kind` about one event in the caller's transaction; None if it was queued before.
    Hand the result to `effects.after_commit` once the transaction has committed."""
    queued = await effects.queue_for(
        _QUEUE_SQL,
        NOTICE_SEND,
        key_prefix="notice:",
        payload_key="delivery_id",
        merchant_id=merchant_id,
        member=member_id,
        notice_kind=kind,
        event=event_key[:128],
        context=json.dumps(dict(context), ensure_ascii=False, default=str),
    )
    return None if queued is None else queued[1]


async def tell(
    effects: Effects,
    kind: str,
    *,
    merchant_id: int,
    member_id: int,
    event_key: str,
    context: Mapping[str, Any],
) -> None:
    """Queue and dispatch a notice on its own, after its cause has committed (the event key keeps it
    once; for a cause whose own transaction cannot hold it, e.g. the one-call check-in)."""
    async with in_transaction():
        queued = await queue_notice(
            effects, kind, merchant_id=merchant_id, member_id=member_id, event_key=event_key, context=context
        )
    if queued is not None:
        await effects.after_commit(queued)


def sender(services: NoticeServices | None) -> Handler:
    """The `notice.send` handler of a process with (or, e.g. a CLI, without) a WeChat client."""

    async def send(effects: Effects, payload: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
        if services is None:
            raise RuntimeError("this process has no WeChat client; a worker or the server sends notices")
        return await _send(services, int(payload["delivery_id"]), now)

    return send


_STATUS_SQL = """
UPDATE notice_delivery SET status = :status, channel = :channel, reason = :reason, errcode = :errcode,
       msgid = :msgid, text = :text, run_after = :run_after, sent_at = :sent_at, updated_at = :now
 WHERE id = :id AND status = ANY(:allowed)
RETURNING id
"""
_OPEN = [DeliveryStatus.QUEUED.value, DeliveryStatus.DEFERRED.value]


async def _mark(
    delivery: NoticeDelivery,
    status: DeliveryStatus,
    *,
    allowed: list[str],
    now: datetime,
    channel: str | None = None,
    reason: str = "",
    errcode: int | None = None,
    msgid: str | None = None,
    text: str = "",
    run_after: datetime | None = None,
) -> bool:
    """Move the record to `status` if it is still in one of `allowed` (the guard against a second
    runner); False if it was not."""
    rows = await queries.fetch_rows(
        _STATUS_SQL,
        id=delivery.id,
        status=status.value,
        channel=channel,
        reason=reason[:255],
        errcode=errcode,
        msgid=msgid,
        text=text,
        run_after=run_after,
        sent_at=now if status == DeliveryStatus.SENT else None,
        now=now,
        allowed=allowed,
    )
    if rows:
        delivery.status, delivery.channel = status, channel
    return bool(rows)


def _columns(model: type[Model], alias: str) -> str:
    return ", ".join(f'{alias}."{c}" AS "{alias}__{c}"' for c in model._meta.db_fields)


# The delivery, its member and merchant and the kind's saved settings: one round trip (it was four).
_LOAD_SQL = f"""
SELECT {_columns(NoticeDelivery, "d")}, {_columns(Member, "m")}, {_columns(Merchant, "c")},
       s.settings AS saved_settings
  FROM notice_delivery d
  JOIN member m ON m.id = d.member_id
  JOIN merchant c ON c.id = d.merchant_id
  LEFT JOIN notice_setting s ON s.merchant_id = d.merchant_id AND s.kind = d.kind
 WHERE d.id = :id
"""  # noqa: S608 - column names from the models' own metadata


def _part(model: type[M], row: dict[str, Any], alias: str) -> M:
    prefix = f"{alias}__"
    return queries.as_model(model, {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)})


async def _load(delivery_id: int) -> tuple[NoticeDelivery, Member, Merchant, Setting]:
    row = (await queries.fetch_rows(_LOAD_SQL, id=delivery_id))[0]
    delivery = _part(NoticeDelivery, row, "d")
    saved = row["saved_settings"]
    config = setting_of(delivery.kind, json.loads(saved) if isinstance(saved, str) else saved)
    return delivery, _part(Member, row, "m"), _part(Merchant, row, "c"), config


async def _send(services: NoticeServices, delivery_id: int, now: datetime) -> dict[str, Any] | None:
    delivery, member, merchant, config = await _load(delivery_id)
    if delivery.status in (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED):
        return None
    context = {
        **delivery.context,
        "member_name": member.name or "",
        "member_code": member.code,
        "merchant_name": merchant.name,
    }
    if delivery.status == DeliveryStatus.SENDING:
        return await _resume(services, delivery, member, merchant, config, context, now)
    if not config.enabled:
        await _mark(delivery, DeliveryStatus.SKIPPED, allowed=_OPEN, now=now, reason="switched_off")
        return None
    if member.anonymized_at is not None:
        await _mark(delivery, DeliveryStatus.SKIPPED, allowed=_OPEN, now=now, reason="member_erased")
        return None
    quiet = QuietHours(*merchant.quiet_hours)
    if not config.kind.urgent and (until := quiet_until(now, merchant.timezone, quiet)) is not None:
        await _mark(
            delivery, DeliveryStatus.DEFERRED, allowed=_OPEN, now=now, reason="quiet_hours", run_after=until
        )
        raise Deferred(until)
    return await _deliver(services, delivery, member, merchant, config, context, now)


async def _choose(
    services: NoticeServices, member: Member, merchant: Merchant, config: Setting, now: datetime
) -> tuple[Channel | None, tuple[str, ...]]:
    """The first channel of `config.channels` that reaches the member. The 48-hour window (a Redis
    read) matters only to the customer-service channel, so it is read only when no channel before
    that one reaches the member."""
    oa_openid = member.openid if member.subscribed else None
    grants = (
        await reach.unused_grants(member.id, config.subscribe_template_id)
        if config.subscribe_template_id and "subscribe" in config.channels and member.mp_openid
        else 0
    )
    known = Reach(oa_openid, member.mp_openid, grants, None, 0)
    channel, reasons = choose(config.channel_config, known, now)
    if channel is None and "custom" in config.channels and oa_openid:
        opened, sent = await reach.window(services.redis, merchant.id, oa_openid)
        known = replace(known, window_opened_at=opened, window_sent=sent)
        channel, reasons = choose(config.channel_config, known, now)
    return channel, reasons


async def _requeue(
    delivery: NoticeDelivery,
    channel: Channel,
    passed: list[str],
    now: datetime,
    *,
    errcode: int | None = None,
) -> None:
    """A send on `channel` did not happen: the record goes back to `queued` with the reasons so far, for
    the next channel or a retry."""
    await _mark(
        delivery,
        DeliveryStatus.QUEUED,
        allowed=[DeliveryStatus.SENDING.value],
        now=now,
        channel=channel,
        errcode=errcode,
        reason=";".join(passed),
    )


class _GrantTaken(Exception):
    """The subscribe grant counted when the channel was chosen went to a concurrent send."""


async def _deliver(
    services: NoticeServices,
    delivery: NoticeDelivery,
    member: Member,
    merchant: Merchant,
    config: Setting,
    context: dict[str, Any],
    now: datetime,
) -> dict[str, Any] | None:
    passed: list[str] = []
    order = list(config.channels)
    while order:
        channel, reasons = await _choose(
            services, member, merchant, replace(config, channels=tuple(order)), now
        )
        passed += reasons
        if channel is None:
            break
        order = order[order.index(channel) + 1 :]
        if not await _mark(delivery, DeliveryStatus.SENDING, allowed=_OPEN, now=now, channel=channel):
            return None  # another runner took it
        try:
            msgid, text = await _call(services, channel, delivery, member, merchant, config, context)
        except _GrantTaken:  # a concurrent send took the member's last grant: as if there was none
            passed.append("subscribe:no_subscribe_grant")
            await _requeue(delivery, channel, passed, now)
            continue
        except REFUSALS as exc:
            errcode = getattr(exc, "errcode", None)
            passed.append(f"{channel}:{errcode or type(exc).__name__}")
            if isinstance(exc, wechat_errors.SubscribeRefused):
                await reach.no_grants_left(member.id, config.subscribe_template_id)
            await _requeue(delivery, channel, passed, now, errcode=errcode)
            delivery.errcode = errcode
            continue
        except wechat_errors.WeChatError:  # busy, rate-limited, unavailable: WeChat did not take it; retry
            await _requeue(delivery, channel, passed, now)
            raise
        except Exception as exc:  # ours (e.g. a field that cannot render for this data): never retried
            log.exception("notice not sent", extra={"delivery_id": delivery.id, "kind": delivery.kind})
            await _mark(
                delivery,
                DeliveryStatus.FAILED,
                allowed=[DeliveryStatus.SENDING.value],
                now=now,
                channel=channel,
                reason=";".join([*passed, f"{channel}:{type(exc).__name__}"]),
            )
            return None
        await _mark(
            delivery,
            DeliveryStatus.SENT,
            allowed=[DeliveryStatus.SENDING.value],
            now=now,
            channel=channel,
            msgid=msgid,
            text=text,
            reason=";".join(passed),
            errcode=delivery.errcode,
        )
        return {"channel": channel, "msgid": msgid}
    final = DeliveryStatus.FAILED if delivery.errcode is not None else DeliveryStatus.SKIPPED
    await _mark(
        delivery,
        final,
        allowed=_OPEN,
        now=now,
        errcode=delivery.errcode,
        reason=";".join(passed) or "no_channel",
    )
    return None


async def _call(
    services: NoticeServices,
    channel: Channel,
    delivery: NoticeDelivery,
    member: Member,
    merchant: Merchant,
    config: Setting,
    context: dict[str, Any],
) -> tuple[str | None, str]:
    """One send on `channel`: (WeChat's msgid if any, the text as the member sees it)."""
    wechat = services.wechat
    if channel == "template":
        data = render_fields(config.template_fields, context)
        msgid = await wechat.send_template(
            oa_credentials(merchant),
            member.openid or "",
            config.template_id,
            data,
            url=config.template_url or None,
            client_msg_id=f"notice-{delivery.id}",
        )
        return str(msgid), " / ".join(data.values())
    if channel == "subscribe":
        if not await reach.use_grant(member.id, config.subscribe_template_id):
            raise _GrantTaken
        data = render_fields(config.subscribe_fields, context)
        await wechat.send_subscribe(
            mp_credentials(merchant),
            member.mp_openid or "",
            config.subscribe_template_id,
            data,
            page=config.subscribe_page or None,
        )
        return None, " / ".join(data.values())
    text = render_body(config.body, context)
    await wechat.send_custom_text(oa_credentials(merchant), member.openid or "", text)
    await reach.window_used(services.redis, merchant.id, member.openid or "")
    return None, text


async def _resume(
    services: NoticeServices,
    delivery: NoticeDelivery,
    member: Member,
    merchant: Merchant,
    config: Setting,
    context: dict[str, Any],
    now: datetime,
) -> dict[str, Any] | None:
    """A send was under way when its process died. Only a template message can be repeated safely."""
    if delivery.channel != "template" or not member.openid:
        await _mark(
            delivery,
            DeliveryStatus.FAILED,
            allowed=[DeliveryStatus.SENDING.value],
            now=now,
            channel=delivery.channel,
            reason="outcome_unknown",
        )
        return None
    try:
        msgid, text = await _call(services, "template", delivery, member, merchant, config, context)
    except wechat_errors.DuplicateClientMsgId as exc:  # WeChat has it already
        msgid, text = (str(exc.msgid) if exc.msgid else None), ""
    except REFUSALS as exc:
        await _mark(
            delivery,
            DeliveryStatus.FAILED,
            allowed=[DeliveryStatus.SENDING.value],
            now=now,
            channel="template",
            errcode=getattr(exc, "errcode", None),
            reason="template refused on resume",
        )
        return None
    await _mark(
        delivery,
        DeliveryStatus.SENT,
        allowed=[DeliveryStatus.SENDING.value],
        now=now,
        channel="template",
        msgid=msgid,
        text=text,
    )
    return {"channel": "template", "msgid": msgid}


async def job_finished(merchant_id: int, msgid: str, status: str) -> bool:
    """`TEMPLATESENDJOBFINISH`: WeChat's word on a template message it accepted (`success`,
    `failed:user block`, `failed: system failed`…)."""
    updated = await NoticeDelivery.filter(merchant_id=merchant_id, msgid=msgid, channel="template").update(
        job_status=status[:64], updated_at=datetime.now(UTC)
    )
    return bool(updated)
