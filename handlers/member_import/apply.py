"""Applying staged import rows, one batch per transaction, set-based: a few statements per batch, never a
round trip per row. (A statement that calls the ledger writers counts what they returned, so every row's
call runs: PostgreSQL evaluates a plain `WITH` query only as far as its reader reads.)

A batch takes the merchant's import lock (a transaction-scoped advisory lock), so imports of one merchant —
the same file uploaded twice at once included — apply one batch at a time and each sees what the other
committed: a member is created once. Within the batch, in order:

1. rows whose opening points lapsed since staging are refused;
2. each row finds its member: by 会员号 (`external_id`, an erased member's row is refused); else by
   phone — a row without 会员号 takes the one live member with that phone (several: refused, the merchant
   must give 会员号), a row with 会员号 claims the one live member with that phone and no 会员号 yet, if no
   other row of the file has the same phone;
3. members are created for the rows that found none (source `import`, a random member code);
4. a row whose profile differs from what the last import applied (`member.import_hash`) writes the fields
   it gives (empty cells keep the member's value) and its tier (`member_tier`, a `tier_change` row with
   reason `import`); the same row imported again writes nothing;
5. opening points and stored value are posted through the ledgers' writer functions, called per row by
   one statement: points as a lot with the row's expiry (kind `opening`), stored value as principal (kind
   `opening`), each under the key `import:opening:<member id>`, so a member gets at most one opening balance
   of each, ever: a re-import replays, a different amount in a later file is noted, not posted;
6. with `welcome_gifts`, each created member's `member.registered` effect (registration bonus, new-member
   coupons) is queued; by default an opening balance brings no welcome bonus;
7. rows still pending are `unchanged`; the job's counts are recomputed.

Steps 1–4 and 6 are a batch's first phase, under the lock; steps 5 and 7 its second phase, which needs no
merchant lock (the account rows serialize postings): the points and the stored value post in two
transactions side by side, then one statement reads each row's outcome back from the ledgers. It runs
while the next batch's first phase does (`handlers.member_import.jobs.drive`). `member_import_row.phase`
says how far a row got; a run that stopped between the phases is finished by the next.

A dry run applies the batch the same way inside a transaction it rolls back, keeping only each row's
outcome: what it reports is exactly what a real run would have done at that moment.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from handlers.core import queries
from handlers.core.tasks import queue_for_all
from handlers.member_import import statements as sql
from handlers.members import lookup as members

BATCH = 5_000
LOCK_CLASS = 7411  # pg_advisory_xact_lock(LOCK_CLASS, merchant id): the merchant's import lock
OPENING_KEY = "import:opening:"
MAX_CODE_ROUNDS = 5
ERASED = "会员已注销（资料已按保留政策删除），不能再导入"
AMBIGUOUS_PHONE = "该手机号对应多个会员，请在文件中填写会员号以区分"
EXPIRED = "积分到期日已过，不能导入已过期的积分"
POINTS_NOTE = "期初积分此前已导入 %s，本次的 %s 未再入账"
STORED_NOTE = "期初储值此前已导入 %s 分，本次的 %s 分未再入账"
POINTS_REASON = "期初积分（会员导入）"
STORED_REASON = "期初储值本金（会员导入）"


@dataclass(frozen=True, slots=True)
class Batch:
    """Who applies the batch, and the merchant facts it needs."""

    job_id: int
    merchant_id: int
    actor: str
    base_tier: str
    welcome_kind: str | None  # the effect queued for each created member, or None


class _DryRun(Exception):
    def __init__(self, outcomes: list[dict[str, Any]]) -> None:
        super().__init__("dry run rolled back")
        self.outcomes = outcomes


# The tables a batch reads by key while it grows them. A bulk load outruns autovacuum's analyze (it
# looks once a minute), and plans made from an empty table's statistics turn a per-row index lookup into a
# scan per row: so each batch first analyzes those that changed by a fifth since their last analyze.
GROWING = ("member", "member_import_row", "points_account", "points_transaction", "wallet_account",
           "wallet_transaction", "member_tier")  # fmt: skip
_STALE_SQL = """
SELECT relname FROM pg_stat_user_tables
 WHERE relname = ANY(:tables::text[]) AND n_mod_since_analyze > GREATEST(:floor, n_live_tup / 5)
"""


async def refresh_statistics(floor: int = 2_000) -> list[str]:
    """ANALYZE the `GROWING` tables whose statistics a bulk load made stale (outside any transaction)."""
    stale = [
        row["relname"] for row in await queries.fetch_rows(_STALE_SQL, tables=list(GROWING), floor=floor)
    ]
    for table in stale:
        if table in GROWING:  # names from the catalogue, checked against our own list
            await queries.fetch_rows(f"ANALYZE {table}")
    return stale


Span = dict[str, Any]


async def _bounds(batch: Batch, phase: int, size: int) -> Span | None:
    bounds = await queries.fetch_one(sql.BOUNDS_SQL, job=batch.job_id, phase=phase, size=size)
    if bounds["lo"] is None:
        return None
    return {"job": batch.job_id, "lo": bounds["lo"], "hi": bounds["hi"], "phase": phase}


async def members_batch(batch: Batch, *, now: datetime) -> tuple[Span, list[int]] | None:
    """Phase 1 of the next batch, under the merchant's import lock: each row's member found, created or
    updated, its tier set (rows 0 → 1). Returns the batch's span for `ledger_batch` and the welcome tasks
    queued, to dispatch after commit; None when no row is left."""
    await refresh_statistics()
    async with in_transaction():
        await queries.fetch_rows(sql.LOCK_SQL, lock_class=LOCK_CLASS, merchant=batch.merchant_id)
        span = await _bounds(batch, 0, BATCH)
        if span is None:
            return None
        welcome = await _members(batch, span, now=now, queue_welcome=True)
        await queries.fetch_rows(sql.PHASE_SQL, **span, to=1)
    return {**span, "phase": 1}, welcome


async def ledger_batch(batch: Batch, span: Span, *, now: datetime) -> int:
    """Phase 2 of a batch: the opening points and stored value posted — two transactions side by side,
    the two ledgers share no row — then each row's outcome made final (rows 1 → 2). Needs no merchant
    lock (account rows serialize postings), so it overlaps the next batch's phase 1."""

    async def post(statement: str, reason: str) -> None:
        async with in_transaction():
            await queries.fetch_rows(statement, **span, **_ledger(batch), reason=reason, now=now)

    await asyncio.gather(post(sql.POINTS_SQL, POINTS_REASON), post(sql.STORED_SQL, STORED_REASON))
    async with in_transaction():
        changed = await _finish(batch, span)
        await queries.fetch_rows(sql.COUNTS_SQL, job=batch.job_id)
    return changed


async def unfinished(batch: Batch) -> Span | None:
    """The rows a stopped run left between the phases (finished by `ledger_batch`)."""
    return await _bounds(batch, 1, 2**31 - 1)


async def dry_batch(batch: Batch, *, now: datetime) -> int:
    """Both phases of the next batch in a transaction rolled back; only each row's outcome is kept."""
    await refresh_statistics()
    try:
        async with in_transaction():
            await queries.fetch_rows(sql.LOCK_SQL, lock_class=LOCK_CLASS, merchant=batch.merchant_id)
            span = await _bounds(batch, 0, BATCH)
            if span is None:
                return 0
            await _members(batch, span, now=now, queue_welcome=False)
            await queries.fetch_rows(sql.PHASE_SQL, **span, to=1)
            posting = {**span, "phase": 1, **_ledger(batch), "now": now}
            await queries.fetch_rows(sql.POINTS_SQL, **posting, reason=POINTS_REASON)
            await queries.fetch_rows(sql.STORED_SQL, **posting, reason=STORED_REASON)
            await _finish(batch, {**span, "phase": 1})
            raise _DryRun(await queries.fetch_rows(sql.OUTCOMES_SQL, **span))
    except _DryRun as rolled_back:
        outcomes = rolled_back.outcomes
    async with in_transaction():
        await queries.fetch_rows(
            sql.WRITE_OUTCOMES_SQL,
            job=batch.job_id,
            rows=[o["row_no"] for o in outcomes],
            statuses=[o["status"] for o in outcomes],
            fields=[o["field"] for o in outcomes],
            reasons=[o["reason"] for o in outcomes],
            notes=[o["note"] for o in outcomes],
        )
        await queries.fetch_rows(sql.COUNTS_SQL, job=batch.job_id)
    return len(outcomes)


async def _members(batch: Batch, span: Span, *, now: datetime, queue_welcome: bool) -> list[int]:
    merchant = batch.merchant_id
    await queries.fetch_rows(sql.EXPIRED_SQL, **span, reason=EXPIRED, now=now)
    await queries.fetch_rows(sql.BY_EXTERNAL_ID_SQL, **span, merchant=merchant, erased=ERASED)
    await queries.fetch_rows(sql.BY_PHONE_SQL, **span, merchant=merchant, ambiguous=AMBIGUOUS_PHONE)
    await _create(span, merchant, now)
    await queries.fetch_rows(
        sql.TIER_SQL,
        **span,
        merchant=merchant,
        base=batch.base_tier,
        now=now,
        tier_key=f"import:{batch.job_id}:tier:",
    )
    await queries.fetch_rows(sql.PROFILE_SQL, **span, now=now)
    if not queue_welcome or batch.welcome_kind is None:
        return []
    queued = await queue_for_all(
        sql.WELCOME_SOURCE,
        batch.welcome_kind,
        key_prefix=members.REGISTERED_KEY_PREFIX,
        payload_key="member_id",
        merchant_id=merchant,
        now=now,
        **span,
    )
    return [task_id for task_id, _ in queued]


def _ledger(batch: Batch) -> dict[str, Any]:
    return {
        "merchant": batch.merchant_id,
        "key": OPENING_KEY,
        "reference": f"import:{batch.job_id}",
        "actor": batch.actor,
    }


async def _finish(batch: Batch, span: Span) -> int:
    rows = await queries.fetch_rows(
        sql.FINISH_SQL,
        job=span["job"],
        lo=span["lo"],
        hi=span["hi"],
        merchant=batch.merchant_id,
        key=OPENING_KEY,
        reference=f"import:{batch.job_id}",
        points_note=POINTS_NOTE,
        stored_note=STORED_NOTE,
    )
    return len(rows)


async def _create(span: Span, merchant: int, now: datetime) -> None:
    """New members for the rows that found none; a member code taken meanwhile is drawn again."""
    for _ in range(MAX_CODE_ROUNDS):
        counts = await queries.fetch_one(sql.CREATE_SQL, **span, merchant=merchant, now=now)
        if counts["wanted"] == counts["made"]:
            return
        rows = [row["row_no"] for row in await queries.fetch_rows(sql.UNCODED_SQL, **span)]
        await queries.fetch_rows(
            sql.RECODE_SQL, job=span["job"], rows=rows, codes=[members.new_member_code() for _ in rows]
        )
    raise RuntimeError("could not allocate unique member codes for an import batch")
