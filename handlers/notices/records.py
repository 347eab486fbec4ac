"""The delivery records as sending sees them: a batch loaded in one query (only the columns sending reads,
a merchant and a kind's settings once), and status changes applied many at a time in one UPDATE, each
guarded by the status it leaves (`queued`/`deferred`, or `sending`), so two runners never both move a
record."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

from handlers.core import queries
from handlers.notices.settings import Setting, setting_of
from handlers.rules.notices import Channel, QuietHours
from models.notice import DeliveryStatus


@dataclass(slots=True)
class Notice:
    """One record on its way, with what sending it needs and what happened so far."""

    key: int  # the caller's name for it (its task)
    delivery: Record
    member: Recipient
    merchant: Shop
    config: Setting
    context: dict[str, Any]
    order: tuple[Channel, ...]  # the channels not tried yet
    passed: list[str] = field(default_factory=list)  # why each channel tried did not carry it
    errcode: int | None = None  # the last refusal's
    channel: Channel | None = None  # this round's
    granted: bool = False  # this round took one of the member's subscribe grants


@dataclass(frozen=True, slots=True)
class Mark:
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


MARK_SQL = """
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


async def mark(marks: Sequence[Mark], now: datetime) -> set[int]:
    """Apply `marks` in one UPDATE; the ids of the records that moved (the others had moved on: a
    second runner)."""
    if not marks:
        return set()
    rows = await queries.fetch_rows(
        MARK_SQL,
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
class Record:
    """The delivery record, as far as sending goes."""

    id: int
    kind: str
    status: DeliveryStatus
    channel: str | None


@dataclass(frozen=True, slots=True)
class Recipient:
    id: int
    openid: str | None
    subscribed: bool
    mp_openid: str | None
    anonymized: bool


@dataclass(frozen=True, slots=True)
class Shop:
    id: int
    timezone: str
    quiet: QuietHours
    oa_appid: str
    oa_secret: str
    mp_appid: str
    mp_secret: str


# The records, their members and merchants and the kinds' saved settings: one round trip, only the
# columns sending reads (building whole models cost more than the query).
LOAD_SQL = """
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


async def load(keys: Mapping[int, int]) -> list[Notice]:
    """The records `keys` names (key → delivery id), as notices to send; missing ones left out. A
    batch's records mostly share a merchant and a kind: each is read once."""
    by_id: dict[int, list[int]] = {}
    for key, delivery_id in keys.items():
        by_id.setdefault(delivery_id, []).append(key)
    merchants: dict[int, Shop] = {}
    configs: dict[tuple[int, str], Setting] = {}
    notices = []
    for row in await queries.fetch_rows(LOAD_SQL, ids=list(by_id)):
        merchant = merchants.get(row["merchant_id"])
        if merchant is None:
            quiet = QuietHours(_minute(row["quiet_start_minute"]), _minute(row["quiet_end_minute"]))
            merchant = merchants[row["merchant_id"]] = Shop(
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
        record = Record(row["id"], row["kind"], DeliveryStatus(row["status"]), row["channel"])
        member = Recipient(
            row["member_id"], row["openid"], row["subscribed"], row["mp_openid"], row["anonymized"]
        )
        context = {
            **(_json(row["context"]) or {}),
            "member_name": row["member_name"] or "",
            "member_code": row["member_code"],
            "merchant_name": row["merchant_name"],
        }
        for key in by_id[record.id]:
            notices.append(Notice(key, record, member, merchant, config, context, config.channels))
    return notices
