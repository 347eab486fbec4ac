"""Overdue credit (the analyses' credit warning, 信用预警): members with charges not repaid in time.

A charge is due `merchant.credit_overdue_days` (default 30) after it was made; its due date is fixed
when it is charged, so changing the setting applies to later charges. Repayments are allocated first in,
first out: each repayment pays the charge due soonest (oldest first), after the refund reversals that
cancelled their own charges. What is left of a charge whose due date has passed (`due_at < as_of`) is
overdue. Everything is read as of `as_of` (entries made later are ignored), so a past date answers
what was overdue then.

`overdue(merchant, as_of)` answers, per member, the overdue amount, the oldest unpaid due date, the
whole days since it (0: overdue for less than a day), and what they owed in total then and their limit.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from tortoise.transactions import in_transaction

from handlers.core import audit_log, queries
from handlers.core.errors import ValidationError
from handlers.members.profile import mask_phone
from handlers.staff.scope import Scope
from models.merchant import Merchant

MAX_OVERDUE_DAYS = 3650

# What is left of each charge as of `:as_of`: repayments allocated first in, first out.
_UNPAID = """
WITH charges AS (
  SELECT c.member_id, c.id, c.due_at,
         c.amount_fen + COALESCE((SELECT SUM(r.amount_fen) FROM credit_entry r
                                   WHERE r.reverses_id = c.id AND r.created_at <= :as_of), 0) AS net
    FROM credit_entry c
   WHERE c.merchant_id = :merchant AND c.kind = 'charge' AND c.created_at <= :as_of
     AND (CAST(:member AS bigint) IS NULL OR c.member_id = :member)
), repaid AS (
  SELECT member_id, -SUM(amount_fen) AS total FROM credit_entry
   WHERE merchant_id = :merchant AND kind = 'repay' AND created_at <= :as_of
     AND (CAST(:member AS bigint) IS NULL OR member_id = :member)
   GROUP BY member_id
), allocated AS (
  SELECT ch.member_id, ch.due_at, ch.net,
         SUM(ch.net) OVER (PARTITION BY ch.member_id ORDER BY ch.due_at, ch.id) AS running,
         COALESCE(rp.total, 0) AS repaid
    FROM charges ch LEFT JOIN repaid rp ON rp.member_id = ch.member_id
), unpaid AS (
  SELECT member_id, due_at, GREATEST(0, LEAST(net, running - repaid)) AS left_fen FROM allocated
)"""
_OVERDUE_SQL = (
    _UNPAID  # noqa: S608 - constant SQL text, values are bound
    + """, late AS (
  SELECT member_id, SUM(left_fen) AS overdue_fen, MIN(due_at) AS oldest_due_at
    FROM unpaid WHERE left_fen > 0 AND due_at < :as_of
   GROUP BY member_id
)
SELECT l.member_id, m.code, m.name, m.phone, m.store_id, l.overdue_fen, l.oldest_due_at,
       (SELECT COALESCE(SUM(e.amount_fen), 0) FROM credit_entry e
         WHERE e.member_id = l.member_id AND e.created_at <= :as_of) AS owed_fen,
       a.limit_fen
  FROM late l
  JOIN member m ON m.id = l.member_id
  JOIN credit_account a ON a.member_id = l.member_id
 WHERE m.anonymized_at IS NULL AND (CAST(:store AS integer) IS NULL OR m.store_id = :store)
 ORDER BY l.oldest_due_at, l.member_id
"""
)
_NEXT_DUE_SQL = _UNPAID + "\nSELECT MIN(due_at) AS due FROM unpaid WHERE left_fen > 0"


@dataclass(frozen=True, slots=True)
class Overdue:
    member_id: int
    member_code: str
    name: str | None
    phone: str | None
    store_id: int | None
    overdue_fen: int
    oldest_due_at: datetime
    days_overdue: int
    owed_fen: int
    limit_fen: int


async def overdue(
    merchant: Merchant,
    as_of: datetime,
    *,
    scope: Scope,
    store_id: int | None = None,
    member_id: int | None = None,
) -> list[Overdue]:
    """Members with overdue credit as of `as_of`, the oldest due date first. `scope` limits a manager to
    the members of their store (the member's store); `store_id` narrows further (admins); `member_id`
    to one member."""
    rows = await queries.fetch_rows(
        _OVERDUE_SQL,
        merchant=merchant.id,
        as_of=as_of,
        store=scope.store_filter(store_id),
        member=member_id,
    )
    return [
        Overdue(
            int(row["member_id"]),
            row["code"],
            row["name"],
            row["phone"],
            row["store_id"],
            int(row["overdue_fen"]),
            row["oldest_due_at"],
            int((as_of - row["oldest_due_at"]).total_seconds() // 86400),
            int(row["owed_fen"]),
            int(row["limit_fen"]),
        )
        for row in rows
    ]


async def next_due(merchant: Merchant, member_id: int, as_of: datetime) -> datetime | None:
    """The earliest due date of what the member still owes (None: nothing is owed)."""
    rows = await queries.fetch_rows(_NEXT_DUE_SQL, merchant=merchant.id, as_of=as_of, member=member_id)
    due: datetime | None = rows[0]["due"] if rows else None
    return due


CSV_HEADER = [
    "会员号",
    "姓名",
    "手机号",
    "逾期金额（元）",
    "最早到期",
    "逾期天数",
    "欠款（元）",
    "信用额度（元）",
]
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str | None) -> str:
    text = value or ""
    return "'" + text if text.startswith(_FORMULA) else text


def _yuan(fen: int) -> str:
    return f"{fen / 100:.2f}"


def to_csv(found: list[Overdue], timezone: str) -> bytes:
    """The rows as CSV (UTF-8 with a BOM, so Excel reads the Chinese); phones masked; times local."""
    zone = ZoneInfo(timezone)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for row in found:
        writer.writerow(
            [
                _text(row.member_code),
                _text(row.name),
                mask_phone(row.phone),
                _yuan(row.overdue_fen),
                row.oldest_due_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
                row.days_overdue,
                _yuan(row.owed_fen),
                _yuan(row.limit_fen),
            ]
        )
    return ("\ufeff" + out.getvalue()).encode()


async def set_overdue_days(merchant: Merchant, days: int, *, actor: str) -> None:
    """How many days a charge may stay unpaid before it is overdue (applies to later charges)."""
    if not 1 <= days <= MAX_OVERDUE_DAYS:
        raise ValidationError(f"overdue_days 须在 1 到 {MAX_OVERDUE_DAYS} 之间", field="overdue_days")
    previous = merchant.credit_overdue_days
    async with in_transaction():
        await Merchant.filter(id=merchant.id).update(credit_overdue_days=days)
        await audit_log.record(
            merchant.id, actor, "credit.settings", "", overdue_days=days, previous_overdue_days=previous
        )
    merchant.credit_overdue_days = days
