"""The analytics rollup rebuild (migration 0026) on a tenth of the analytics benchmark's data: batches of
`ANALYTICS_REBUILD_BATCH` ids (default 100,000), each its own transaction, against 0021's rebuild in one
transaction, in the same run, and the rollups of both compared row for row.

Data: `bench.analytics_data` at 100,000 members and 1,000,000 purchases (`ANALYTICS_REBUILD_MEMBERS`,
`ANALYTICS_REBUILD_PURCHASES`), in its own database (`ANALYTICS_REBUILD_DATABASE_URL`, default
`mb_analytics_rebuild_bench`; generated and loaded once, then reused). `python -m bench analytics_rebuild`.
"""

from __future__ import annotations

import os
import time

import asyncpg

from bench import analytics_data as data

TITLE = "analytics rollup rebuild: in batches (each its own transaction) against one transaction"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/mb_analytics_rebuild_bench"
SCALE = data.Scale(
    int(os.environ.get("ANALYTICS_REBUILD_MEMBERS", "100000")),
    int(os.environ.get("ANALYTICS_REBUILD_PURCHASES", "1000000")),
)
BATCH = int(os.environ.get("ANALYTICS_REBUILD_BATCH", "100000"))
TABLES = ("sales_day", "sales_day_category", "sales_month_category", "sales_day_product",
          "sales_month_product", "member_day", "points_day", "member_stats", "member_cohort")  # fmt: skip


async def _fingerprint(conn: asyncpg.Connection) -> dict[str, str]:
    """Each rollup's rows of merchant 1 (zero rows left out), hashed in a fixed order."""
    out = {}
    for table in TABLES:
        out[table] = await conn.fetchval(
            f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"  # names above
            " WHERE merchant_id = 1"
        )
    return out


async def run() -> str:
    os.environ.setdefault(
        "ANALYTICS_BENCH_DATABASE_URL", os.environ.get("ANALYTICS_REBUILD_DATABASE_URL", DEFAULT_URL)
    )
    loaded = await data.load(SCALE)
    conn = await asyncpg.connect(data.dsn(data.database_url()))
    try:
        await conn.execute("SET work_mem = '256MB'")
        started = time.perf_counter()
        await conn.execute("SELECT memberbot_analytics_rebuild(1)", timeout=None)
        whole = time.perf_counter() - started
        one = await _fingerprint(conn)
        started = time.perf_counter()
        steps, longest = 0, 0.0
        while True:
            began = time.perf_counter()
            phase = await conn.fetchval("SELECT memberbot_analytics_rebuild_step(1, $1)", BATCH, timeout=None)
            longest = max(longest, time.perf_counter() - began)
            steps += 1
            if phase == "done":
                break
        batched = time.perf_counter() - started
        same = await _fingerprint(conn) == one
    finally:
        await conn.close()
    return "\n".join(
        [
            f"data: {SCALE.members:,} members, {SCALE.purchases:,} purchases"
            + (f" (loaded in {loaded:.0f} s)" if loaded else " (cached)"),
            "",
            "| rebuild | seconds | transactions | longest transaction s |",
            "| --- | ---: | ---: | ---: |",
            f"| one transaction (0021) | {whole:.1f} | 1 | {whole:.1f} |",
            f"| batches of {BATCH:,} ids (0026) | {batched:.1f} | {steps} | {longest:.1f} |",
            "",
            f"batched / one transaction: ×{batched / whole:.2f};"
            f" rollups identical: {'yes' if same else 'NO'}",
        ]
    )
