"""Queue a notice with its cause, and hand queued notices to the sender (`handlers.notices.sending`):
at most once per (event, member), on the first channel WeChat's rules allow, with a record of what
happened.

`queue_notice` inserts the delivery record (its unique key makes a repeated cause queue nothing) and
the `notice.send` task in the caller's transaction. The task runs alone (`sender`: right after its
cause commits, or a retry) or with others (`batch_sender`: a worker's batch, the sweep), and either way
the same code sends: a batch costs the database a few statements, not a few per notice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tortoise.transactions import in_transaction

from handlers.core.tasks import BatchHandler, Claimed, Effects, Handler, Outcomes, Queued
from handlers.notices.sending import NoticeServices, deliver
from models.notice import NoticeDelivery

__all__ = ["NOTICE_SEND", "NoticeServices", "batch_sender", "job_finished", "queue_notice", "sender", "tell"]
NOTICE_SEND = "notice.send"


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
        outcome = (await deliver(_services(services), {0: int(payload["delivery_id"])}, now))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return send


def batch_sender(services: NoticeServices | None) -> BatchHandler:
    """`sender` for many `notice.send` tasks at once."""

    async def send_all(effects: Effects, tasks: Sequence[Claimed], now: datetime) -> Outcomes:
        return await deliver(_services(services), {t.id: int(t.payload["delivery_id"]) for t in tasks}, now)

    return send_all


def _services(services: NoticeServices | None) -> NoticeServices:
    if services is None:
        raise RuntimeError("this process has no WeChat client; a worker or the server sends notices")
    return services


async def job_finished(merchant_id: int, msgid: str, status: str) -> bool:
    """`TEMPLATESENDJOBFINISH`: WeChat's word on a template message it accepted (`success`,
    `failed:user block`, `failed: system failed`…)."""
    updated = await NoticeDelivery.filter(merchant_id=merchant_id, msgid=msgid, channel="template").update(
        job_status=status[:64], updated_at=datetime.now(UTC)
    )
    return bool(updated)
