"""POST /api/staff/purchases (HTTP, PostgreSQL + Redis) vs raw asyncpg doing the same writes.

memberbot: one `memberbot serve` process; 16 keep-alive connections post purchases with unique
idempotency keys, spread over 256 members (each request: auth, pricing, the member's account lock,
the purchase row, the ledger posting and lot, the tier check, the stored result).
Baseline: 16 asyncpg tasks, each transaction locking the member's account row FOR UPDATE, inserting
the purchase, the points transaction and the lot, and updating the account — the same writes without
HTTP, ORM or rules; the floor serves exactly that transaction behind a bare aiohttp handler. Same
database, same machine, interleaved slices, and the same endpoint with WORKERS=2 (scale-out). Target:
memberbot at >= 60% of the floor's transactions/s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import services
from bench.harness import LoadResult, Report, Server, Verdict, table
from bench.services import DATABASE_URL, REDIS_URL

TITLE = "staff purchase endpoint (HTTP, PostgreSQL + Redis) vs raw asyncpg transactions"
CONCURRENCY = 16
MEMBERS = 256
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
ROUNDS = 2
TARGET_RATIO = 0.60  # of the floor's tx/s (issue 13)
TARGET_RSS_MIB = 200.0


async def seed(database_url: str) -> tuple[int, list[int]]:
    from handlers.staff.accounts import create_staff
    from handlers.staff.merchants import MerchantInput, create_merchant
    from models.points import PointsAccount

    async with services.orm(database_url):
        merchant = await create_merchant(MerchantInput(slug="bench", name="压测门店"))
        await create_staff(
            merchant, store_code="main", username="till", role="cashier", password=services.STAFF_PASSWORD
        )
        members = await services.bulk_members(merchant.id, MEMBERS, "oPurchase")
        accounts = [PointsAccount(merchant_id=merchant.id, member_id=m) for m in members]
        await PointsAccount.bulk_create(accounts)
        return merchant.id, members


def purchases(members: list[int], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for n in itertools.count():
        body = {
            "idempotency_key": f"{prefix}-{n}",
            "member_id": members[n % len(members)],
            "amount_fen": 1_000 + (n % 7) * 100,
        }
        yield "/api/staff/purchases", body


PURCHASE_SQL = """
insert into purchase (idempotency_key, request_digest, amount_fen, discount_fen, offset_points, offset_fen,
    paid_fen, points_earned, points_pending, rule_set_version, breakdown, items, status, created_at,
    member_id, merchant_id, period_spend_fen, points_today_before, tier_code, result)
values ($1, $2, $3, 0, 0, 0, $3, $4, false, 1, $5, '[]', 'completed', now(), $6, $7, 0, 0, 'normal', $8)
returning id"""
TRANSACTION_SQL = """
insert into points_transaction (delta, kind, idempotency_key, reference, balance_after, actor, reason,
    created_at, member_id, merchant_id)
values ($1, 'earn_purchase', $2, $3, $4, 'staff:1', $5, now(), $6, $7) returning id"""
LOT_SQL = """
insert into points_lot (source_key, amount, remaining, status, earned_at, expires_at, member_id,
    merchant_id, source_id)
values ($1, $2, $2, 'available', now(), $3, $4, $5, $6)"""
ACCOUNT_SQL = """
update points_account set balance = balance + $1, lifetime_earned = lifetime_earned + $1, updated_at = now()
where id = $2"""


async def raw_purchase(
    conn: asyncpg.Connection, merchant_id: int, member_id: int, key: str, amount_fen: int
) -> None:
    points = amount_fen // 100
    breakdown = json.dumps([{"code": "base", "label": "消费积分", "points": points}])
    async with conn.transaction():
        account = await conn.fetchrow(
            "select id, balance from points_account where member_id = $1 for update", member_id
        )
        purchase_id = await conn.fetchval(
            PURCHASE_SQL,
            key,
            "0" * 64,
            amount_fen,
            points,
            breakdown,
            member_id,
            merchant_id,
            json.dumps({"points_earned": points}),
        )
        earn_key = f"purchase:{key}:earn"
        txn_id = await conn.fetchval(
            TRANSACTION_SQL,
            points,
            earn_key,
            f"purchase:{purchase_id}",
            account["balance"] + points,
            f"消费 {amount_fen / 100:.2f} 元",
            member_id,
            merchant_id,
        )
        await conn.execute(
            LOT_SQL, earn_key, points, datetime.now(UTC) + timedelta(days=365), member_id, merchant_id, txn_id
        )
        await conn.execute(ACCOUNT_SQL, points, account["id"])


async def raw_slice(
    pool: asyncpg.Pool, merchant_id: int, members: list[int], prefix: str, seconds: float
) -> LoadResult:
    result = LoadResult()
    bodies = purchases(members, prefix)
    started = time.perf_counter()
    stop_at = started + seconds

    async def task() -> None:
        async with pool.acquire() as conn:
            for _, body in bodies:
                if time.perf_counter() >= stop_at:
                    return
                sent = time.perf_counter()
                try:
                    await raw_purchase(
                        conn, merchant_id, body["member_id"], body["idempotency_key"], body["amount_fen"]
                    )
                except asyncpg.PostgresError:
                    result.errors += 1
                result.latencies_ms.append((time.perf_counter() - sent) * 1000)
                result.requests += 1

    await asyncio.gather(*(task() for _ in range(CONCURRENCY)))
    result.seconds = time.perf_counter() - started
    return result


async def measure(
    servers: list[Server], floor: Server, merchant_id: int, members: list[int]
) -> tuple[list[LoadResult], LoadResult, LoadResult]:
    """Interleaved slices: each memberbot server (WORKERS=1, WORKERS=2), the raw baseline, the floor."""
    async with aiohttp.ClientSession() as session:
        token = await services.staff_token(session, servers[0].url, "bench", "till")
    # Warm-up: one purchase per member on each side (first-use rows, caches, pool connections).
    for n, server in enumerate(servers):
        await services.json_load(
            server.url,
            itertools.islice(purchases(members, f"warm{n}"), MEMBERS),
            token=token,
            connections=CONCURRENCY,
            seconds=60,
        )
    await services.json_load(
        floor.url, purchases(members, "floorwarm"), token="-", connections=CONCURRENCY, seconds=0.5
    )
    endpoints, raw, bare = [LoadResult() for _ in servers], LoadResult(), LoadResult()
    async with asyncpg.create_pool(DATABASE_URL, min_size=CONCURRENCY, max_size=CONCURRENCY) as pool:
        await raw_slice(pool, merchant_id, members, "rawwarm", 0.5)
        for round_ in range(ROUNDS):
            for n, server in enumerate(servers):
                endpoints[n].add(await _slice(server, purchases(members, f"http{n}-{round_}"), token))
            raw.add(await raw_slice(pool, merchant_id, members, f"raw{round_}", SECONDS / ROUNDS))
            bare.add(await _slice(floor, purchases(members, f"floor{round_}"), "-"))
    return endpoints, raw, bare


async def _slice(server: Server, bodies: Iterator[tuple[str, dict[str, Any]]], token: str) -> LoadResult:
    cpu = server.cpu_seconds()
    result, _ = await services.json_load(
        server.url, bodies, token=token, connections=CONCURRENCY, seconds=SECONDS / ROUNDS
    )
    result.server_cpu_seconds = server.cpu_seconds() - cpu
    return result


def report(
    endpoints: list[LoadResult], raw: LoadResult, bare: LoadResult, rss: list[float], audited: tuple[int, int]
) -> Report:
    def row(name: str, r: LoadResult, cpu: object, rss_: object) -> list[object]:
        to_floor = r.rps / bare.rps if bare.rps else 0.0
        to_raw = r.rps / raw.rps if raw.rps else 0.0
        return [
            name,
            r.rps,
            r.percentile(50),
            r.percentile(99),
            r.requests,
            r.errors,
            cpu,
            rss_,
            f"{to_raw:.2f}",
            f"{to_floor:.2f}",
        ]

    one, two = endpoints
    rows: list[list[object]] = [
        row("raw asyncpg (baseline)", raw, "-", "-"),
        row("the same transaction, bare aiohttp (floor)", bare, bare.cpu_us_per_request, "-"),
        row("POST /api/staff/purchases", one, one.cpu_us_per_request, rss[0]),
        row("the same, WORKERS=2", two, two.cpu_us_per_request, rss[1]),
    ]
    head = [
        "path",
        "tx/s",
        "p50 ms",
        "p99 ms",
        "transactions",
        "errors",
        "server CPU µs/tx",
        "RSS MiB/process",
        "/ raw",
        "/ floor",
    ]
    ratio = one.rps / bare.rps if bare.rps else 0.0
    code, mismatches = audited
    verdicts = [
        Verdict("staff purchase", "memberbot / floor (tx/s)", ratio, TARGET_RATIO),
        Verdict("staff purchase", "server CPU µs per purchase", one.cpu_us_per_request, None),
        Verdict(
            "staff purchase", "WORKERS=2 / WORKERS=1 (tx/s)", two.rps / one.rps if one.rps else 0.0, None
        ),
        Verdict("staff purchase", "RSS MiB per process", max(rss), TARGET_RSS_MIB, at_most=True),
        Verdict("staff purchase", "audit mismatches afterwards", mismatches, 1, at_most=True),
    ]
    text = (
        table(head, rows) + f"\n\nendpoint at {ratio:.0%} of the floor's tx/s (target >= {TARGET_RATIO:.0%}: "
        f"{'met' if verdicts[0].met else 'NOT met'}); memberbot audit points afterwards: exit {code}, "
        f"{mismatches} mismatches (the baseline's rows are balanced too). The floor is the "
        "baseline's own transaction served over HTTP by a bare aiohttp handler (bench/floor.py)."
    )
    return Report(text, verdicts)


async def run() -> Report | str:
    try:
        await services.fresh_postgres()
        await services.fresh_redis()
    except services.Unavailable as exc:
        return f"skipped: {exc} (set BENCH_DATABASE_URL / BENCH_REDIS_URL)"
    merchant_id, members = await seed(DATABASE_URL)
    with tempfile.TemporaryDirectory(prefix="memberbot-bench-") as tmp:
        servers = [
            services.memberbot("memberbot-pg", DATABASE_URL, REDIS_URL, Path(tmp)),
            services.memberbot("memberbot-pg-2w", DATABASE_URL, REDIS_URL, Path(tmp), workers=2),
        ]
        floor = services.floor_server(Path(tmp), merchant_id=merchant_id)
        try:
            await asyncio.gather(*(server.start() for server in [*servers, floor]))
            endpoints, raw, bare = await measure(servers, floor, merchant_id, members)
            rss = [server.max_rss_mib() for server in servers]
        finally:
            for server in [*servers, floor]:
                server.stop()
    audited = services.audit(DATABASE_URL, REDIS_URL)
    setup = (
        f"{CONCURRENCY} connections / asyncpg tasks over {MEMBERS} members, {SECONDS:.0f} s each in "
        f"{ROUNDS} interleaved slices, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"Python {sys.version.split()[0]}"
    )
    result = report(endpoints, raw, bare, rss, audited)
    return Report(setup + "\n" + result.text, result.verdicts)
