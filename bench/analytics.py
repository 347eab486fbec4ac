"""The analyses on 1,000,000 members and 10,000,000 purchases (issue 11 §5): p50 / p95 of every one.

Data: `bench.analytics_data` (generated and loaded once, then reused: ANALYTICS_BENCH_DATABASE_URL,
default `mb_analytics_bench`). Each analysis is called as the API calls it (`handlers.analytics`, one
merchant, every store unless the case names one) `ANALYTICS_BENCH_RUNS` times (default 20) after
two warm-up calls, one at a time; the target is p95 ≤ 500 ms. `python -m bench analytics`.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from tortoise import Tortoise

from bench import analytics_data as data
from handlers.analytics import credit, members, points, refresh, sales
from handlers.analytics.report import Report, Window
from models import tortoise_config

TITLE = "analyses on 1M members / 10M purchases: p50 and p95 per analysis (target p95 ≤ 500 ms)"
TARGET_MS = 500.0
ZONE = ZoneInfo("Asia/Shanghai")
# Ranges that do not fall on month boundaries (the whole months come from monthly rollups, the days
# around them from daily ones): the 30 and 365 days to 2026-11-25.
TODAY = data.END.astimezone(ZONE).date() - timedelta(days=6)
MONTH = (TODAY - timedelta(days=29), TODAY)
YEAR = (TODAY - timedelta(days=364), TODAY)
STORE = 3


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Window], Awaitable[Report]]
    span: tuple[Any, Any] | None = None  # None: no range (a snapshot of every member)
    store: int | None = None


def _cases() -> list[Case]:
    now = data.END
    cases = [
        Case("members/tiers", members.tiers),
        Case("members/tiers (one store)", members.tiers, store=STORE),
        Case("members/new day, 30 d", lambda w: members.new_members(w, "day"), MONTH),
        Case("members/new month, 365 d", lambda w: members.new_members(w, "month"), YEAR),
        Case("members/staff, 365 d", members.by_staff, YEAR),
        Case("members/gender-age", members.gender_age),
        Case("members/gender-age, 365 d", members.gender_age, YEAR),
        Case("members/tiers, 365 d", members.tiers, YEAR),
        Case("members/regions", members.regions),
        Case("members/referrals, 365 d", members.referral_ranking, YEAR),
        Case("members/churn 90 d", lambda w: members.churn(w, 90, now=now)),
        Case("members/churn 90 d (one store)", lambda w: members.churn(w, 90, now=now), store=STORE),
        Case("members/cycle +50%", lambda w: members.cycle(w, 50, now=now)),
        Case("members/credit", lambda w: credit.credit_warning(w, now=now)),
        Case("members/cohorts, 365 d", members.cohorts, YEAR),
        Case("sales/categories, 30 d", sales.by_category, MONTH),
        Case("sales/categories, 365 d", sales.by_category, YEAR),
        Case("sales/trend day, 30 d", lambda w: sales.trend(w, "day"), MONTH),
        Case("sales/trend month, 365 d", lambda w: sales.trend(w, "month"), YEAR),
        Case("sales/trend week, 365 d (one store)", lambda w: sales.trend(w, "week"), YEAR, STORE),
        Case("sales/staff, 365 d", sales.staff_ranking, YEAR),
        Case("sales/products, 30 d", sales.product_ranking, MONTH),
        Case("sales/products, 365 d", sales.product_ranking, YEAR),
        Case("sales/stock, 30 d", sales.stock_ranking, MONTH),
        Case("sales/deliveries", lambda w: sales.delivery_reminders(w, now=now)),
        Case("points/periods day, 30 d", lambda w: points.by_period(w, "day"), MONTH),
        Case("points/periods month, 365 d", lambda w: points.by_period(w, "month"), YEAR),
        Case("points/sources, 365 d", points.by_source, YEAR),
        Case("points/liability, 365 d", points.liability, YEAR),
    ]
    return cases


def _window(case: Case) -> Window:
    first, last = case.span if case.span else (None, None)
    return Window(1, "Asia/Shanghai", TODAY, first, last, case.store)


async def _time(case: Case, runs: int) -> list[float]:
    window = _window(case)
    for _ in range(2):
        await case.run(window)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        await case.run(window)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


_NEW_PURCHASES_SQL = """
INSERT INTO purchase (merchant_id, member_id, store_id, staff_id, idempotency_key, request_digest, amount_fen,
                      discount_fen, offset_points, offset_fen, paid_fen, points_earned, points_pending,
                      tier_code, period_spend_fen, points_today_before, breakdown, items, status, created_at)
SELECT merchant_id, member_id, store_id, staff_id, 'again-' || id, request_digest, amount_fen, discount_fen,
       offset_points, offset_fen, paid_fen, points_earned, points_pending, tier_code, period_spend_fen,
       points_today_before, breakdown, items, 'completed', $1
  FROM purchase ORDER BY id DESC LIMIT $2
"""
BACKLOG = 10_000


async def _refresh_cost() -> float:
    """Seconds one refresh takes to roll up `BACKLOG` new purchases (rolled back afterwards)."""
    conn = await asyncpg.connect(data.dsn(data.database_url()))
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(_NEW_PURCHASES_SQL, data.END, BACKLOG)
        started = time.perf_counter()
        await conn.fetchval("SELECT memberbot_analytics_refresh($1)", BACKLOG)
        took = time.perf_counter() - started
        await transaction.rollback()
    finally:
        await conn.close()
    return took


async def run() -> str:
    loaded = await data.load(data.FULL)
    runs = int(os.environ.get("ANALYTICS_BENCH_RUNS", "20"))
    await Tortoise.init(config=tortoise_config(data.database_url()))
    try:
        started = time.perf_counter()
        await refresh.snapshots(data.END)
        snapshot_s = time.perf_counter() - started
        lines = [
            f"data: {data.FULL.members:,} members, {data.FULL.purchases:,} purchases"
            + (f" (loaded in {loaded:.0f} s)" if loaded else " (cached)"),
            f"worker: member snapshot of the merchant {snapshot_s:.1f} s (every 10 min);"
            f" one refresh of {BACKLOG:,} new purchases {await _refresh_cost():.1f} s",
            "",
            "| analysis | p50 ms | p95 ms | ≤ 500 ms |",
            "| --- | ---: | ---: | :---: |",
        ]
        for case in _cases():
            timings = await _time(case, runs)
            p95 = _p95(timings)
            verdict = "yes" if p95 <= TARGET_MS else "NO"
            lines.append(f"| {case.name} | {statistics.median(timings):.1f} | {p95:.1f} | {verdict} |")
    finally:
        await Tortoise.close_connections()
    return "\n".join(lines)
