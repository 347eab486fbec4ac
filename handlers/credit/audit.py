"""`memberbot audit credit`: every credit account equals its ledger and never exceeded its limit, and the
overdue view's rollup (`credit_due`, `credit_rollup`, migration 0025) equals a full recomputation from
the ledger."""

from __future__ import annotations

from datetime import datetime

from handlers.core import queries
from handlers.loyalty.ledger_audit import Mismatch

# Per account: the ledger's sum and its last limit, against the account row.
_ACCOUNTS_SQL = """
SELECT a.merchant_id, a.member_id, a.balance_fen, a.limit_fen,
       COALESCE(SUM(e.amount_fen), 0) AS ledger_fen,
       COALESCE((SELECT l.limit_after FROM credit_entry l WHERE l.member_id = a.member_id
                  ORDER BY l.id DESC LIMIT 1), 0) AS last_limit
  FROM credit_account a
  LEFT JOIN credit_entry e ON e.member_id = a.member_id
 WHERE CAST(:merchant AS integer) IS NULL OR a.merchant_id = :merchant
 GROUP BY a.id
"""
# Per entry: its running balance recomputed from the ledger, and its bounds.
_ENTRIES_SQL = """
SELECT merchant_id, member_id, id, kind, balance_after, limit_after, running FROM (
  SELECT e.*, SUM(e.amount_fen) OVER (PARTITION BY e.member_id ORDER BY e.id) AS running
    FROM credit_entry e
   WHERE CAST(:merchant AS integer) IS NULL OR e.merchant_id = :merchant
) x
WHERE balance_after <> running OR balance_after < 0 OR balance_after > limit_after OR limit_after < 0
"""
_ORPHANS_SQL = """
SELECT e.merchant_id, e.member_id, SUM(e.amount_fen) AS total FROM credit_entry e
 WHERE (CAST(:merchant AS integer) IS NULL OR e.merchant_id = :merchant)
   AND NOT EXISTS (SELECT 1 FROM credit_account a WHERE a.member_id = e.member_id)
 GROUP BY e.merchant_id, e.member_id
"""

# The rollup's open charges against the FIFO recomputation from the whole ledger, charge by charge.
_DUE_SQL = """
WITH want AS (
  SELECT * FROM memberbot_credit_open_charges(ARRAY(
    SELECT DISTINCT e.member_id FROM credit_entry e
     WHERE CAST(:merchant AS integer) IS NULL OR e.merchant_id = :merchant))
), got AS (
  SELECT * FROM credit_due d WHERE CAST(:merchant AS integer) IS NULL OR d.merchant_id = :merchant
)
SELECT COALESCE(w.merchant_id, g.merchant_id) AS merchant_id, COALESCE(w.member_id, g.member_id) AS member_id,
       COALESCE(w.charge_id, g.charge_id) AS charge_id, COALESCE(w.remaining_fen, 0) AS want,
       COALESCE(g.remaining_fen, 0) AS got, w.due_at AS want_due, g.due_at AS got_due
  FROM want w FULL JOIN got g ON g.charge_id = w.charge_id
 WHERE w.remaining_fen IS DISTINCT FROM g.remaining_fen OR w.due_at IS DISTINCT FROM g.due_at
    OR w.member_id IS DISTINCT FROM g.member_id
 ORDER BY 1, 2, 3
"""
# Each member's latest entry against the rollup's (a member with entries and no rollup row included).
_LAST_SQL = """
SELECT COALESCE(x.merchant_id, r.merchant_id) AS merchant_id, COALESCE(x.member_id, r.member_id) AS member_id,
       x.last_at AS want, r.last_entry_at AS got
  FROM (SELECT e.merchant_id, e.member_id, MAX(e.created_at) AS last_at FROM credit_entry e
         WHERE CAST(:merchant AS integer) IS NULL OR e.merchant_id = :merchant
         GROUP BY e.merchant_id, e.member_id) x
  FULL JOIN (SELECT * FROM credit_rollup
              WHERE CAST(:merchant AS integer) IS NULL OR merchant_id = :merchant) r
    ON r.member_id = x.member_id
 WHERE x.last_at IS DISTINCT FROM r.last_entry_at
"""

# Each member's sum, earliest and latest due date of the open charges, against the recomputation.
_SUMMARY_SQL = """
SELECT r.merchant_id, r.member_id, r.open_fen, COALESCE(w.open_fen, 0) AS want_open, r.first_due_at,
       w.first_due_at AS want_first, r.last_due_at, w.last_due_at AS want_last
  FROM credit_rollup r
  LEFT JOIN (
    SELECT member_id, SUM(remaining_fen) AS open_fen, MIN(due_at) AS first_due_at, MAX(due_at) AS last_due_at
      FROM memberbot_credit_open_charges(ARRAY(
        SELECT x.member_id FROM credit_rollup x
         WHERE CAST(:merchant AS integer) IS NULL OR x.merchant_id = :merchant))
     GROUP BY member_id
  ) w ON w.member_id = r.member_id
 WHERE (CAST(:merchant AS integer) IS NULL OR r.merchant_id = :merchant)
   AND (r.open_fen <> COALESCE(w.open_fen, 0) OR r.first_due_at IS DISTINCT FROM w.first_due_at
        OR r.last_due_at IS DISTINCT FROM w.last_due_at)
"""


def _epoch(moment: datetime | None) -> int:
    return int(moment.timestamp()) if moment is not None else 0


async def audit_rollup(merchant_id: int | None = None) -> list[Mismatch]:
    """The overdue rollup against the ledger: each open charge's remaining amount and due date, each
    member's sum and earliest and latest due date of them, and latest entry time (times as Unix
    seconds, 0: missing)."""
    mismatches: list[Mismatch] = []
    for row in await queries.fetch_rows(_DUE_SQL, merchant=merchant_id):
        merchant, member, charge = row["merchant_id"], row["member_id"], row["charge_id"]
        if row["want"] != row["got"]:
            check = f"rollup: what is left of charge {charge} (first in, first out)"
            mismatches.append(Mismatch(merchant, member, check, int(row["want"]), int(row["got"])))
        if row["want_due"] is not None and row["got_due"] is not None and row["want_due"] != row["got_due"]:
            check = f"rollup: due date of charge {charge}"
            mismatches.append(
                Mismatch(merchant, member, check, _epoch(row["want_due"]), _epoch(row["got_due"]))
            )
    for row in await queries.fetch_rows(_SUMMARY_SQL, merchant=merchant_id):
        merchant, member = row["merchant_id"], row["member_id"]
        for check, want, got in (
            ("rollup: what is left of the open charges", int(row["want_open"]), int(row["open_fen"])),
            ("rollup: the earliest due date", _epoch(row["want_first"]), _epoch(row["first_due_at"])),
            ("rollup: the latest due date", _epoch(row["want_last"]), _epoch(row["last_due_at"])),
        ):
            if want != got:
                mismatches.append(Mismatch(merchant, member, check, want, got))
    for row in await queries.fetch_rows(_LAST_SQL, merchant=merchant_id):
        check = "rollup: the time of the latest entry"
        mismatches.append(
            Mismatch(row["merchant_id"], row["member_id"], check, _epoch(row["want"]), _epoch(row["got"]))
        )
    return mismatches


async def audit_credit(merchant_id: int | None = None) -> list[Mismatch]:
    """Every account: owed == Σ amount_fen, limit == the last entry's limit, 0 ≤ owed ≤ limit; every
    entry's `balance_after` is the ledger's running sum there and lies within 0 and its `limit_after`;
    no entries without an account; the overdue rollup equals the ledger (`audit_rollup`)."""
    mismatches: list[Mismatch] = []
    for row in await queries.fetch_rows(_ACCOUNTS_SQL, merchant=merchant_id):
        merchant, member, owed, limit = (
            row["merchant_id"],
            row["member_id"],
            row["balance_fen"],
            row["limit_fen"],
        )
        checks = (
            ("owed = sum of the ledger", int(row["ledger_fen"]), owed),
            ("limit = the last entry's limit", int(row["last_limit"]), limit),
            ("owed is not negative", max(owed, 0), owed),
            ("owed is within the limit", min(owed, limit), owed),
        )
        mismatches += [
            Mismatch(merchant, member, name, want, got) for name, want, got in checks if want != got
        ]
    for row in await queries.fetch_rows(_ENTRIES_SQL, merchant=merchant_id):
        limit = row["limit_after"]
        check = f"entry {row['id']} ({row['kind']}): balance_after = running sum, within 0..{limit}"
        mismatches.append(
            Mismatch(row["merchant_id"], row["member_id"], check, int(row["running"]), row["balance_after"])
        )
    for row in await queries.fetch_rows(_ORPHANS_SQL, merchant=merchant_id):
        mismatches.append(
            Mismatch(row["merchant_id"], row["member_id"], "entries without an account", 0, int(row["total"]))
        )
    return mismatches + await audit_rollup(merchant_id)
