"""`memberbot audit credit`: every credit account equals its ledger and never exceeded its limit."""

from __future__ import annotations

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


async def audit_credit(merchant_id: int | None = None) -> list[Mismatch]:
    """Every account: owed == Σ amount_fen, limit == the last entry's limit, 0 ≤ owed ≤ limit; every
    entry's `balance_after` is the ledger's running sum there and lies within 0 and its `limit_after`;
    no entries without an account."""
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
    return mismatches
