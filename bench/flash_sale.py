"""POST /api/mp/{slug}/mall/flash-sales/{id}/buy (HTTP, PostgreSQL + Redis) vs the bare gate.

memberbot: one `memberbot serve` process; 16 keep-alive connections post flash-sale attempts from 512
members (each with its own session) at a sale of `UNITS` units, limit 2 per member — the burst a
flash sale is: a few successes (the order written with its points debit) and a flood of refusals.
Baseline, measured in the same run on a sale of the same size: 16 asyncio tasks run the SAME Lua gate
(`handlers/flash_gate.lua`) by EVALSHA from Python, plus one asyncpg INSERT per success — no HTTP, no
auth, no ORM, no points. Exactness: both sides must end with orders == units. Target: memberbot at
>= 40% of the baseline's attempts/s.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from bench import floor, services
from bench.harness import LoadResult, Report, Server, Verdict, table
from bench.services import DATABASE_URL, REDIS_URL

TITLE = "flash-sale attempts (HTTP, PostgreSQL + Redis) vs the bare Lua gate + asyncpg INSERT"
CONCURRENCY = 16
MEMBERS = 512
UNITS = 100
LIMIT = 2
PRICE = 100
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
WARMUP_SECONDS = 0.3
TARGET_RATIO = 0.60  # of the floor's attempts/s (issue 13)
TARGET_RSS_MIB = 200.0
BASELINE_TABLE = "bench_flash_order"
FLOOR_SALE_ID = -1
INSERT = f"insert into {BASELINE_TABLE} (member, key) values ($1, $2)"


async def seed(database_url: str, redis_url: str) -> tuple[str, int, list[str]]:
    """The merchant, the sale, and one member session token per member (members hold enough points)."""
    from handlers.loyalty import ledger
    from handlers.mall import flash
    from handlers.mall.catalogue import ItemInput, create_item
    from handlers.staff.merchants import MerchantInput, create_merchant
    from handlers.staff.sessions import SessionKind, SessionStore
    from models.mall import ItemKind
    from models.points import PointsKind

    now = datetime.now(UTC)
    async with services.orm(database_url):
        merchant = await create_merchant(MerchantInput(slug="bench", name="压测门店"))
        item = await create_item(
            merchant,
            ItemKind.PICKUP,
            ItemInput(name="秒杀商品", price_points=PRICE),
            stock=UNITS,
            actor="bench",
        )
        spec = flash.SaleSpec(
            item_id=item.id,
            price_points=PRICE,
            stock=UNITS,
            limit_per_member=LIMIT,
            starts_at=now - timedelta(minutes=1),
            ends_at=now + timedelta(hours=1),
        )
        sale = await flash.create_sale(merchant.id, spec, now=now, actor="bench")
        members = await services.bulk_members(merchant.id, MEMBERS, "oFlash")
        for member_id in members:
            await ledger.credit(
                merchant.id,
                member_id,
                PRICE * LIMIT,
                PointsKind.GRANT,
                key=f"seed:{member_id}",
                now=now,
                expires_at=None,
            )
    redis = Redis.from_url(redis_url)
    try:
        store = SessionStore(redis)
        tokens = [(await store.issue(SessionKind.MEMBER, merchant.id, m)).token for m in members]
    finally:
        await redis.aclose()
    return merchant.slug, sale.id, tokens


def attempts(count: int, prefix: str = "a") -> Iterator[tuple[int, str]]:
    """(member index, idempotency key): members in turn, a fresh key each time."""
    for n in itertools.count():
        yield n % count, f"{prefix}{n}"


async def endpoint_load(
    server: Server, slug: str, sale_id: int, tokens: list[str], seconds: float = SECONDS, prefix: str = "a"
) -> LoadResult:
    path = f"/api/mp/{slug}/mall/flash-sales/{sale_id}/buy"
    cpu = server.cpu_seconds()
    result = await http_load(
        server,
        len(tokens),
        lambda member, key: (path, {"idempotency_key": key}, {"Authorization": f"Bearer {tokens[member]}"}),
        seconds=seconds,
        prefix=prefix,
    )
    result.server_cpu_seconds = server.cpu_seconds() - cpu
    return result


async def fresh_gate(redis: Redis, sale_id: int) -> list[str]:
    """A gate of `UNITS` units under its own sale id, loaded from nothing; its keys."""
    from handlers.mall import flash

    keys = flash.gate_keys(sale_id)
    await redis.delete(*keys)
    await flash.run_gate(redis, keys, "load", UNITS, 3600, f"0 {2**52} {UNITS}", 0)  # open for ever
    return keys


async def floor_load(floor: Server, redis: Redis, members: int) -> LoadResult:
    """The baseline's attempts behind bare aiohttp (bench/floor.py), on its own gate (sale id -1)."""
    await fresh_gate(redis, FLOOR_SALE_ID)
    return await http_load(
        floor, members, lambda member, key: ("/floor/flash", {"member": member, "idempotency_key": key}, {})
    )


async def http_load(
    server: Server,
    members: int,
    request: Callable[[int, str], tuple[str, dict[str, Any], dict[str, str]]],
    *,
    seconds: float = SECONDS,
    prefix: str = "a",
) -> LoadResult:
    """Attempts over CONCURRENCY keep-alive connections for `seconds`; 200 (bought) and 409 are ok."""
    result = LoadResult()
    plan = attempts(members, prefix)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(
        server.url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        started = time.perf_counter()
        stop_at = started + seconds

        async def worker() -> None:
            for member, key in plan:
                if time.perf_counter() >= stop_at:
                    return
                sent = time.perf_counter()
                path, body, headers = request(member, key)
                try:
                    async with session.post(path, json=body, headers=headers) as response:
                        await response.read()
                        ok = response.status in (200, 409)
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                result.latencies_ms.append((time.perf_counter() - sent) * 1000)
                result.requests += 1
                result.errors += not ok

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        result.seconds = time.perf_counter() - started
    return result


async def baseline_load(redis: Redis, pool: asyncpg.Pool, members: int) -> tuple[LoadResult, int]:
    """The bare gate on sale id 0 (its own keys): EVALSHA, and one INSERT per unit taken."""
    from handlers.mall import flash

    keys = await fresh_gate(redis, 0)
    result = LoadResult()
    plan = attempts(members)
    started = time.perf_counter()
    stop_at = started + SECONDS

    async def task() -> None:
        async with pool.acquire() as conn:
            for member, key in plan:
                if time.perf_counter() >= stop_at:
                    return
                sent = time.perf_counter()
                now_ms = int(time.time() * 1000)  # the gate checks the window, as the floor does
                verdict = await flash.run_gate(redis, keys, "take", member, LIMIT, key, now_ms)
                if verdict == "taken":
                    await conn.execute(INSERT, member, key)
                result.latencies_ms.append((time.perf_counter() - sent) * 1000)
                result.requests += 1

    await asyncio.gather(*(task() for _ in range(CONCURRENCY)))
    result.seconds = time.perf_counter() - started
    return result, await pool.fetchval(f"select count(*) from {BASELINE_TABLE}")


async def sold(database_url: str, sale_id: int) -> tuple[int, int]:
    conn = await asyncpg.connect(database_url)
    try:
        orders = await conn.fetchval("select count(*) from mall_order where flash_sale_id = $1", sale_id)
        sold_ = await conn.fetchval("select sold from flash_sale where id = $1", sale_id)
        return int(orders), int(sold_)
    finally:
        await conn.close()


def report(
    endpoints: list[LoadResult],
    raw: LoadResult,
    bare: LoadResult,
    rss: list[float],
    exact: tuple[int, int, int, int],
    audited: tuple[int, int],
) -> Report:
    orders, sold_, raw_orders, floor_orders = exact

    def row(name: str, r: LoadResult, orders_: object, cpu: object, rss_: object) -> list[object]:
        to_floor = r.rps / bare.rps if bare.rps else 0.0
        to_raw = r.rps / raw.rps if raw.rps else 0.0
        return [
            name,
            r.rps,
            r.percentile(50),
            r.percentile(99),
            r.requests,
            r.errors,
            orders_,
            cpu,
            rss_,
            f"{to_raw:.2f}",
            f"{to_floor:.2f}",
        ]

    one, two, sold_out = endpoints
    rows: list[list[object]] = [
        row("EVALSHA + asyncpg INSERT (baseline)", raw, raw_orders, "-", "-"),
        row("the same, bare aiohttp (floor)", bare, floor_orders, bare.cpu_us_per_request, "-"),
        row("POST …/flash-sales/{id}/buy", one, orders, one.cpu_us_per_request, rss[0]),
        row("  its second slice: sold out", sold_out, 0, sold_out.cpu_us_per_request, "-"),
        row("the same, WORKERS=2 (sold out)", two, "-", two.cpu_us_per_request, rss[1]),
    ]
    head = [
        "path",
        "attempts/s",
        "p50 ms",
        "p99 ms",
        "attempts",
        "errors",
        "orders",
        "server CPU µs/attempt",
        "RSS MiB/process",
        "/ raw",
        "/ floor",
    ]
    ratio = one.rps / bare.rps if bare.rps else 0.0
    exactness = orders == sold_ == raw_orders == floor_orders == UNITS
    code, mismatches = audited
    lost = sold_out.rps / bare.rps if bare.rps else 0.0
    verdicts = [
        Verdict(
            "flash-sale attempt", "memberbot / floor (attempts/s)", ratio, TARGET_RATIO, note="incl. orders"
        ),
        Verdict("flash-sale attempt", "sold-out attempts / floor (attempts/s)", lost, TARGET_RATIO),
        Verdict(
            "flash-sale attempt", "server CPU µs per sold-out attempt", sold_out.cpu_us_per_request, None
        ),
        Verdict("flash-sale attempt", "server CPU µs per attempt", one.cpu_us_per_request, None),
        Verdict(
            "flash-sale attempt",
            "WORKERS=2 / WORKERS=1 (attempts/s)",
            two.rps / one.rps if one.rps else 0,
            None,
        ),
        Verdict("flash-sale attempt", "RSS MiB per process", max(rss), TARGET_RSS_MIB, at_most=True),
        Verdict("flash-sale attempt", f"orders == units ({UNITS}), both sides", float(exactness), 1),
    ]
    text = (
        table(head, rows) + f"\n\nendpoint at {ratio:.0%} of the floor's attempts/s (target >= "
        f"{TARGET_RATIO:.0%}: {'met' if verdicts[0].met else 'NOT met'}); orders == units ({UNITS}) on "
        f"both sides: {'exact' if exactness else 'NOT EXACT'} (FlashSale.sold {sold_}); memberbot audit "
        f"points afterwards: exit {code}, {mismatches} mismatches. The floor is the baseline's own work "
        "served over HTTP by a bare aiohttp handler (bench/floor.py)."
    )
    return Report(text, verdicts)


async def run() -> Report | str:
    try:
        await services.fresh_postgres()
        await services.fresh_redis()
    except services.Unavailable as exc:
        return f"skipped: {exc} (set BENCH_DATABASE_URL / BENCH_REDIS_URL)"
    slug, sale_id, tokens = await seed(DATABASE_URL, REDIS_URL)
    with tempfile.TemporaryDirectory(prefix="memberbot-bench-") as tmp:
        servers = [
            services.memberbot("memberbot-pg", DATABASE_URL, REDIS_URL, Path(tmp)),
            services.memberbot("memberbot-pg-2w", DATABASE_URL, REDIS_URL, Path(tmp), workers=2),
        ]
        endpoints = [LoadResult(), LoadResult()]
        try:
            await asyncio.gather(*(server.start() for server in servers))
            for n, server in enumerate(servers):  # warm-up: first-use connections, caches, the script
                await endpoint_load(server, slug, sale_id, tokens, WARMUP_SECONDS, f"w{n}warm-")
            for round_ in range(2):  # the units go early; then both answer sold-out attempts
                for n, server in enumerate(servers):
                    part = await endpoint_load(server, slug, sale_id, tokens, SECONDS / 2, f"w{n}r{round_}-")
                    endpoints[n].add(part)
                    if round_ == 1 and n == 0:
                        sold_out = part
            rss = [server.max_rss_mib() for server in servers]
        finally:
            for server in servers:
                server.stop()
    redis = Redis.from_url(REDIS_URL)
    try:
        async with asyncpg.create_pool(DATABASE_URL, min_size=CONCURRENCY, max_size=CONCURRENCY) as pool:
            for table_name in (BASELINE_TABLE, floor.FLASH_TABLE):
                await pool.execute(
                    f"create table {table_name} (id bigserial primary key, "
                    "member int not null, key text not null unique)"
                )
            raw, raw_orders = await baseline_load(redis, pool, len(tokens))
            with tempfile.TemporaryDirectory(prefix="memberbot-bench-") as tmp:
                bare_server = services.floor_server(Path(tmp), flash_sale_id=FLOOR_SALE_ID)
                try:
                    await bare_server.start()
                    cpu = bare_server.cpu_seconds()
                    bare = await floor_load(bare_server, redis, len(tokens))
                    bare.server_cpu_seconds = bare_server.cpu_seconds() - cpu
                finally:
                    bare_server.stop()
            floor_orders = await pool.fetchval(f"select count(*) from {floor.FLASH_TABLE}")
    finally:
        await redis.aclose()
    orders, sold_ = await sold(DATABASE_URL, sale_id)
    audited = services.audit(DATABASE_URL, REDIS_URL)
    setup = (
        f"{CONCURRENCY} connections / tasks, {MEMBERS} members, {UNITS} units (limit {LIMIT}), "
        f"{SECONDS:.0f} s each, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"Python {sys.version.split()[0]}"
    )
    result = report(
        [*endpoints, sold_out], raw, bare, rss, (orders, sold_, raw_orders, floor_orders), audited
    )
    return Report(setup + "\n" + result.text, result.verdicts)
