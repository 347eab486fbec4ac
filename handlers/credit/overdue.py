"""Overdue credit (the analyses' credit warning, 信用预警): members with charges not repaid in time.

A charge is due `merchant.credit_overdue_days` (default 30) after it was made; its due date is fixed
when it is charged, so changing the setting applies to later charges. Repayments are allocated first in,
first out: each repayment pays the charge due soonest (oldest first), after the refund reversals that
cancelled their own charges. What is left of a charge whose due date has passed (`due_at < as_of`) is
overdue. Everything is read as of `as_of` (entries made later are ignored), so a past date answers
what was overdue then.

It reads the rollup of migrations 0025 and 0027 (`credit_due`: each member's charges not yet repaid in
full, what is left of each and its due date; `credit_rollup`: their sum and earliest and latest due
date; kept by a trigger in every ledger write's transaction): what is overdue at `as_of` is what is
left of the charges due before it, summed at read time, so it is never stale. A member with an entry
later than `as_of` (a past moment) is recomputed from the ledger instead.

`overdue(merchant, as_of)` answers, per member, the overdue amount, the oldest unpaid due date, the
whole days since it (0: overdue for less than a day), and what they owed in total then and their limit.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from tortoise.transactions import in_transaction

from handlers.core import audit_log, queries
from handlers.core.errors import ValidationError
from handlers.members.profile import mask_phone
from handlers.staff.scope import Scope
from models.merchant import Merchant

MAX_OVERDUE_DAYS = 3650

# From the rollup (migrations 0025, 0027), for the members whose last entry is not later than `:as_of`
# (the rollup is the state after every entry): a member whose open charges are all due before `:as_of`
# is overdue by all of them (their `credit_rollup` row alone); one with open charges due on both sides
# of it sums its `credit_due` rows due before it.
_ROLLUP = """
SELECT l.member_id, m.code, m.name, m.phone, m.store_id, l.overdue_fen, l.oldest_due_at,
       a.balance_fen AS owed_fen, a.limit_fen
  FROM (SELECT r.member_id, r.open_fen AS overdue_fen, r.first_due_at AS oldest_due_at
          FROM credit_rollup r
         WHERE r.merchant_id = :merchant AND r.first_due_at < :as_of AND r.last_due_at < :as_of
           AND r.last_entry_at <= :as_of{only}
        UNION ALL
        SELECT d.member_id, SUM(d.remaining_fen), MIN(d.due_at)
          FROM credit_rollup r JOIN credit_due d ON d.member_id = r.member_id AND d.due_at < :as_of
         WHERE r.merchant_id = :merchant AND r.first_due_at < :as_of AND r.last_due_at >= :as_of
           AND r.last_entry_at <= :as_of{only}
         GROUP BY d.member_id) l
  JOIN member m ON m.id = l.member_id
  JOIN credit_account a ON a.member_id = l.member_id
 WHERE m.anonymized_at IS NULL AND (CAST(:store AS integer) IS NULL OR m.store_id = :store)
"""
# From the ledger: each charge net of the refund reversals of it, and each member's repayments, as of
# `:as_of` (`{only}`: which members' rows).
_CHARGES = """
WITH reversed AS (
  SELECT reverses_id, SUM(amount_fen) AS total FROM credit_entry
   WHERE merchant_id = :merchant AND kind = 'reversal' AND created_at <= :as_of{only}
   GROUP BY reverses_id
), charges AS (
  SELECT c.member_id, c.id, c.due_at, c.amount_fen + COALESCE(r.total, 0) AS net
    FROM credit_entry c LEFT JOIN reversed r ON r.reverses_id = c.id
   WHERE c.merchant_id = :merchant AND c.kind = 'charge' AND c.created_at <= :as_of{only}
), repaid AS (
  SELECT member_id, -SUM(amount_fen) AS total FROM credit_entry
   WHERE merchant_id = :merchant AND kind = 'repay' AND created_at <= :as_of{only}
   GROUP BY member_id
)"""
# First in, first out, the repayments R pay the charges due soonest: of the charges already due (D in
# all), D - R is unpaid when positive, and the oldest unpaid due date is the first due charge whose
# running total passes R. One pass over the charges in due order, grouped per member.
_OVERDUE = """, running AS (
  SELECT ch.member_id, ch.due_at, ch.net, COALESCE(rp.total, 0) AS repaid,
         SUM(ch.net) OVER (PARTITION BY ch.member_id ORDER BY ch.due_at, ch.id) AS running
    FROM charges ch LEFT JOIN repaid rp ON rp.member_id = ch.member_id
), late AS (
  SELECT member_id, MAX(repaid) AS repaid, SUM(net) AS charged,
         COALESCE(SUM(net) FILTER (WHERE due_at < :as_of), 0) AS due,
         MIN(due_at) FILTER (WHERE due_at < :as_of AND running > repaid) AS oldest_due_at
    FROM running GROUP BY member_id
)
SELECT l.member_id, m.code, m.name, m.phone, m.store_id, l.due - l.repaid AS overdue_fen, l.oldest_due_at,
       l.charged - l.repaid AS owed_fen, a.limit_fen
  FROM late l
  JOIN member m ON m.id = l.member_id
  JOIN credit_account a ON a.member_id = l.member_id
 WHERE l.due > l.repaid AND m.anonymized_at IS NULL
   AND (CAST(:store AS integer) IS NULL OR m.store_id = :store)
"""
_NEXT_DUE = """
SELECT MIN(ch.due_at) AS due FROM (
  SELECT due_at, SUM(net) OVER (ORDER BY due_at, id) AS running FROM charges
) ch WHERE ch.running > COALESCE((SELECT total FROM repaid), 0)
"""
_ORDER = " ORDER BY oldest_due_at, member_id"
_ONE = " AND member_id = :member"
_ONE_DUE = " AND r.member_id = :member"
# Members with an entry later than `:as_of`: their answer as of then comes from the ledger.
_LATER = (
    " AND member_id IN (SELECT r.member_id FROM credit_rollup r"
    " WHERE r.merchant_id = :merchant AND r.last_entry_at > :as_of)"
)
OVERDUE_SQL = _CHARGES.format(only=_LATER) + _OVERDUE + " UNION ALL " + _ROLLUP.format(only="") + _ORDER
MEMBER_OVERDUE_SQL = (
    _CHARGES.format(only=_ONE + _LATER) + _OVERDUE + " UNION ALL " + _ROLLUP.format(only=_ONE_DUE) + _ORDER
)
# The full recomputation from the ledger, every member or one (the tests' and the benchmark's reference:
# what this module answered before the rollup).
LEDGER_OVERDUE_SQL = _CHARGES.format(only="") + _OVERDUE + _ORDER
LEDGER_MEMBER_OVERDUE_SQL = _CHARGES.format(only=_ONE) + _OVERDUE + _ORDER
_NEXT_DUE_SQL = """
SELECT r.last_entry_at, r.first_due_at AS due FROM (SELECT 1) one
  LEFT JOIN credit_rollup r ON r.member_id = :member AND r.merchant_id = :merchant
"""
_LEDGER_NEXT_DUE_SQL = _CHARGES.format(only=_ONE) + _NEXT_DUE
# A merchant-wide recomputation costs the planner enough to JIT-compile it, which took longer than
# running it (3.4 of 8.5 s on 700,000 entries): off for this statement's transaction.
NO_JIT = "SET LOCAL jit = off"


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
    store = scope.store_filter(store_id)
    if member_id is None:  # the merchant-wide list: the analyses' read connection (a replica, if any)
        rows = await queries.fetch_read(
            OVERDUE_SQL, jit=False, merchant=merchant.id, as_of=as_of, store=store
        )
    else:  # one member's page: the primary, so it shows the repayment just made
        async with in_transaction():
            await queries.fetch_rows(NO_JIT)
            rows = await queries.fetch_rows(
                MEMBER_OVERDUE_SQL, merchant=merchant.id, as_of=as_of, store=store, member=member_id
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
    state = await queries.fetch_one(_NEXT_DUE_SQL, merchant=merchant.id, member=member_id)
    if state["last_entry_at"] is None or state["last_entry_at"] <= as_of:
        rollup: datetime | None = state["due"]
        return rollup
    rows = await queries.fetch_rows(_LEDGER_NEXT_DUE_SQL, merchant=merchant.id, as_of=as_of, member=member_id)
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


def _cells(row: Overdue, zone: ZoneInfo) -> list[str | int]:
    return [
        _text(row.member_code),
        _text(row.name),
        mask_phone(row.phone),
        _yuan(row.overdue_fen),
        row.oldest_due_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        row.days_overdue,
        _yuan(row.owed_fen),
        _yuan(row.limit_fen),
    ]


def to_csv(found: list[Overdue], timezone: str) -> bytes:
    """The rows as CSV (UTF-8 with a BOM, so Excel reads the Chinese); phones masked; times local."""
    zone = ZoneInfo(timezone)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for row in found:
        writer.writerow(_cells(row, zone))
    return ("\ufeff" + out.getvalue()).encode()


def to_xlsx(found: list[Overdue], timezone: str) -> bytes:
    """The rows as an XLSX workbook (sheet 信用预警): the CSV's columns, amounts in yuan as numbers."""
    zone = ZoneInfo(timezone)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("信用预警")
    sheet.append(CSV_HEADER)
    for row in found:
        cells: list[object] = list(_cells(row, zone))
        for column in (3, 6, 7):
            cells[column] = Decimal(str(cells[column]))
        sheet.append(cells)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


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
