"""The credit warning (信用预警) on 50,000 members with credit, 500,000 charges and 200,000 repayments: the
overdue list from the rollup (migration 0025) against the full FIFO recomputation from the ledger it
replaced, in the same run, and what the rollup costs a credit write.

Data (`CREDIT_BENCH_DATABASE_URL`, default `mb_credit_bench`, dropped and migrated on every run):
`CREDIT_BENCH_MEMBERS` members (default 50,000), each with ten charges a month apart over the year
before `END` (10–50 yuan, due 30 days later) and four 10-yuan repayments, written in one INSERT with
the triggers off (`session_replication_role = replica`), so the rollup is then built by the
migration's backfill (`memberbot_credit_rollup` over every member), which is timed.

Measured, `CREDIT_BENCH_RUNS` times each (default 5) after a warm-up, interleaved:
- the merchant-wide list as of `END` (what `GET /api/admin/credit/overdue`, the analyses' credit warning
  and the dashboard ask): the ledger's recomputation (the old query, JIT off as it ran) against the
  rollup's query, both over asyncpg;
- one member's overdue figure (the member page), ledger against rollup;
- a repayment through `memberbot_credit_repay` with the rollup's trigger and without it (each in a
  transaction rolled back, after the same ALTER TABLE … DISABLE / ENABLE TRIGGER).
`python -m bench credit`.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from bench.analytics_data import dsn
from handlers.credit import overdue

TITLE = "credit warning on 50,000 members / 500,000 charges: rollup against the ledger recomputation"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/mb_credit_bench"
MEMBERS = int(os.environ.get("CREDIT_BENCH_MEMBERS", "50000"))
RUNS = int(os.environ.get("CREDIT_BENCH_RUNS", "5"))
END = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
PROBE = 12_345  # the member whose page is timed

_SETUP = """
INSERT INTO merchant (id, slug, name, timezone, oa_appid, oa_secret, oa_token, oa_aes_key, mp_appid,
                      mp_secret, retention_grace_days, created_at)
VALUES (1, 'credit-bench', '信用基准商户', 'Asia/Shanghai', '', '', '', '', '', '', 30,
        $1::timestamptz - interval '2 years');
INSERT INTO member (id, merchant_id, code, subscribed, registered_at, source)
SELECT n, 1, 'C' || n, true, $1::timestamptz - interval '2 years', 'import' FROM generate_series(1, $2) n;
INSERT INTO credit_account (merchant_id, member_id, limit_fen, balance_fen, updated_at)
SELECT 1, n, 1000000, 0, $1::timestamptz FROM generate_series(1, $2) n;
"""
# Ten charges per member (month j, 10-50 yuan), four repayments of 10 yuan (a day after charges 1, 3, 5,
# 7), with their running balances.
_ENTRIES = """
WITH moves AS (
  SELECT n AS member_id, 'charge' AS kind, 1000 + ((n * 7 + j * 13) % 5) * 1000 AS amount,
         $1::timestamptz - interval '360 days' + j * interval '30 days' + (n % 1440) * interval '1 minute'
           AS at, j AS seq
    FROM generate_series(1, $2) n, generate_series(0, 9) j
  UNION ALL
  SELECT n, 'repay', -1000,
         $1::timestamptz - interval '359 days' + (2 * k + 1) * interval '30 days'
           + (n % 1440) * interval '1 minute', 2 * k + 1
    FROM generate_series(1, $2) n, generate_series(0, 3) k
)
INSERT INTO credit_entry (merchant_id, member_id, kind, amount_fen, balance_after, limit_after,
                          idempotency_key, due_at, actor, reason, created_at)
SELECT 1, member_id, kind, amount,
       SUM(amount) OVER (PARTITION BY member_id ORDER BY at, kind), 1000000,
       kind || ':' || member_id || ':' || seq,
       CASE WHEN kind = 'charge' THEN at + interval '30 days' END, 'bench', '', at
  FROM moves ORDER BY member_id, at, kind
"""
_BALANCES = """
UPDATE credit_account a SET balance_fen = s.total
  FROM (SELECT member_id, SUM(amount_fen) AS total FROM credit_entry GROUP BY member_id) s
 WHERE s.member_id = a.member_id
"""
_BACKFILL = "SELECT memberbot_credit_rollup(ARRAY(SELECT DISTINCT member_id FROM credit_entry ORDER BY 1))"
_REPAY = "SELECT * FROM memberbot_credit_repay(1, $1, 100, $2, NULL, NULL, 'bench', 'bench', $3)"  # 1 yuan


def database_url() -> str:
    return os.environ.get("CREDIT_BENCH_DATABASE_URL", DEFAULT_URL)


async def _load(url: str) -> list[str]:
    from tests.support import dbutil  # the same migration runner as the tests

    base, _, name = url.rpartition("/")
    admin = await asyncpg.connect(dsn(f"{base}/postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await dbutil.reset_postgres(url)
    await dbutil.migrate(url)
    conn = await asyncpg.connect(dsn(url))
    try:
        began = time.perf_counter()
        await conn.execute("SET session_replication_role = replica")
        for statement in _SETUP.strip().split(";\n"):
            await conn.execute(statement, *((END, MEMBERS) if "$2" in statement else (END,)))
        await conn.execute(_ENTRIES, END, MEMBERS, timeout=None)
        await conn.execute(_BALANCES)
        await conn.execute("SET session_replication_role = origin")
        loaded = time.perf_counter() - began
        began = time.perf_counter()
        await conn.execute(_BACKFILL, timeout=None)
        backfill = time.perf_counter() - began
        await conn.execute("VACUUM ANALYZE")
        entries = await conn.fetchval("SELECT count(*) FROM credit_entry")
        open_charges = await conn.fetchval("SELECT count(*) FROM credit_due")
    finally:
        await conn.close()
    return [
        f"data: {MEMBERS:,} members, {entries:,} credit entries (loaded in {loaded:.0f} s);"
        f" backfill of the rollup (the migration's) {backfill:.1f} s, {open_charges:,} open charges"
    ]


_NAMED = re.compile(r"(?<!:):([A-Za-z_]\w*)")


def _bound(text: str, values: dict[str, object]) -> tuple[str, list[object]]:
    """`:name` placeholders as `$n` (as `handlers.core.queries` binds them) and the values in order."""
    order = list(dict.fromkeys(_NAMED.findall(text)))
    return _NAMED.sub(lambda m: f"${order.index(m.group(1)) + 1}", text), [values[n] for n in order]


def _flat(text: str, values: dict[str, object]) -> list[object]:
    sql, args = _bound(text, values)
    return [sql, *args]


async def _timed(run: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await run()
    return (time.perf_counter() - started) * 1000


async def _in_rollback(conn: asyncpg.Connection, statements: list[str], sql: str, *args: object) -> object:
    transaction = conn.transaction()
    await transaction.start()
    try:
        for statement in statements:
            await conn.execute(statement)
        return await conn.fetch(sql, *args)
    finally:
        await transaction.rollback()


async def run() -> str:
    url = database_url()
    lines = await _load(url)
    conn = await asyncpg.connect(dsn(url))
    jit_off = [overdue.NO_JIT]
    # The same statement both ways (it takes the same lock), the trigger off or left on.
    no_trigger = ["ALTER TABLE credit_entry DISABLE TRIGGER credit_entry_rollup"]
    with_trigger = ["ALTER TABLE credit_entry ENABLE TRIGGER credit_entry_rollup"]
    where = {"merchant": 1, "as_of": END, "store": None, "member": PROBE}

    def query(text: str, statements: list[str]) -> Callable[[], Awaitable[object]]:
        sql, args = _bound(text, where)
        return lambda: _in_rollback(conn, statements, sql, *args)

    def repayment(statements: list[str]) -> Callable[[], Awaitable[object]]:
        return lambda: _in_rollback(conn, statements, _REPAY, PROBE, f"bench-{time.perf_counter_ns()}", END)

    cases = {
        "list, ledger recomputation (before)": query(overdue.LEDGER_OVERDUE_SQL, jit_off),
        "list, rollup (after)": query(overdue.OVERDUE_SQL, jit_off),
        "one member, ledger recomputation (before)": query(overdue.LEDGER_MEMBER_OVERDUE_SQL, jit_off),
        "one member, rollup (after)": query(overdue.MEMBER_OVERDUE_SQL, jit_off),
        "a repayment, no rollup trigger (before)": repayment(no_trigger),
        "a repayment, with the rollup trigger (after)": repayment(with_trigger),
    }
    try:
        rows = [await conn.fetch(*_flat(q, where)) for q in (overdue.LEDGER_OVERDUE_SQL, overdue.OVERDUE_SQL)]
        assert [tuple(r) for r in rows[0]] == [tuple(r) for r in rows[1]], (
            "the rollup disagrees with the ledger"
        )
        lines.append(f"overdue members as of {END:%Y-%m-%d}: {len(rows[1]):,} (same rows both ways)")
        timings: dict[str, list[float]] = {name: [] for name in cases}
        for case in cases.values():
            await case()  # warm-up
        for _ in range(RUNS):
            for name, case in cases.items():
                timings[name].append(await _timed(case))
    finally:
        await conn.close()
    lines += ["", "| case | median ms | min ms | max ms |", "| --- | ---: | ---: | ---: |"]
    for name, values in timings.items():
        lines.append(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |")
    pairs = list(timings.values())
    ratios = [statistics.median(pairs[i]) / statistics.median(pairs[i + 1]) for i in (0, 2)]
    write = statistics.median(pairs[5]) / statistics.median(pairs[4])
    lines.append(
        f"\nbefore / after: list ×{ratios[0]:.0f}, one member ×{ratios[1]:.1f};"
        f" a repayment with the trigger costs ×{write:.2f} of one without"
    )
    return "\n".join(lines)
