"""The analytics benchmark's data: one merchant with 1,000,000 members, 10,000,000 purchases with items,
their points ledger, tiers and a small mall, generated once into COPY files under var/ and loaded with
COPY into its own database (`ANALYTICS_BENCH_DATABASE_URL`, default `mb_analytics_bench`).

Both steps are cached: the files (`var/analytics_bench/<version>/`, deterministic, seeded) are written
only when missing, and the database is loaded only when its `bench_dataset` row does not name this
version and scale. Loading runs with triggers off (`session_replication_role = replica`), sets the
trigger-kept member columns itself, then builds the rollups with `memberbot_analytics_rebuild_step`
(batches of 500,000 ids, each its own transaction).
"""

from __future__ import annotations

import gzip
import importlib
import json
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO

import asyncpg

from bench.harness import ROOT

VERSION = "v1"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/mb_analytics_bench"
END = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # 2026-12-01 00:00 in Asia/Shanghai
START = END - timedelta(days=3 * 365)
STORES = 20
STAFF_PER_STORE = 5
CATEGORIES = (
    "饮品", "咖啡", "茶", "面包", "蛋糕", "甜点", "轻食", "沙拉", "三明治", "果汁",
    "零食", "礼盒", "周边", "杯具", "豆子", "冷冻", "乳品", "坚果", "巧克力", "季节限定",
)  # fmt: skip
PRODUCTS = 200
SOURCES = (("oa_subscribe", 40), ("oa_referral", 15), ("oa_staff", 20), ("mini_program", 20), ("import", 5))
NULL = "\\N"  # COPY text format


@dataclass(frozen=True)
class Scale:
    members: int
    purchases: int

    @property
    def tag(self) -> str:
        return f"{VERSION}-{self.members}-{self.purchases}"


FULL = Scale(1_000_000, 10_000_000)


def database_url() -> str:
    return os.environ.get("ANALYTICS_BENCH_DATABASE_URL", DEFAULT_URL)


def dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


def cache_dir(scale: Scale) -> Path:
    return ROOT / "var" / "analytics_bench" / scale.tag


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S+00")


def _products(rng: random.Random) -> list[tuple[str, str, int, int | None]]:
    """(sku, category, price, cost or None) — one in ten without a known cost."""
    items = []
    for n in range(PRODUCTS):
        price = rng.randrange(500, 20000, 100)
        cost = None if n % 10 == 9 else price * rng.randrange(30, 70) // 100
        items.append((f"SKU{n:04d}", CATEGORIES[n % len(CATEGORIES)], price, cost))
    return items


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([name for name, _ in table], weights=[w for _, w in table])[0]


def _counts(rng: random.Random, scale: Scale) -> list[int]:
    """Purchases per member: skewed (a quarter never buy), summing to exactly `scale.purchases`."""
    raw = [0 if rng.random() < 0.25 else 1 + int(rng.expovariate(1.0)) ** 2 + int(rng.expovariate(0.2))
           for _ in range(scale.members)]  # fmt: skip
    total = sum(raw)
    counts = [k * scale.purchases // total for k in raw]
    short = scale.purchases - sum(counts)
    for i in rng.sample(range(scale.members), short):
        counts[i] += 1
    return counts


def generate(scale: Scale) -> Path:
    """Write the COPY files (tab-separated text, gzip level 1) unless they exist; returns their folder."""
    folder = cache_dir(scale)
    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20261130)
    products = _products(rng)
    counts = _counts(rng, scale)
    span = (END - START).total_seconds()
    staff_of = {s: [s * STAFF_PER_STORE + k + 1 for k in range(STAFF_PER_STORE)] for s in range(STORES)}

    def opener(name: str) -> IO[str]:
        return gzip.open(folder / f"{name}.tsv.gz", "wt", compresslevel=1, encoding="utf-8")

    with (
        opener("member") as members,
        opener("purchase") as purchases,
        opener("points") as points,
        opener("tier") as tiers,
    ):
        purchase_id = points_id = 0
        for i in range(scale.members):
            member_id = i + 1
            registered = START + timedelta(seconds=span * i / scale.members)
            source = _weighted(rng, SOURCES)
            store = rng.randrange(STORES)
            staff = rng.choice(staff_of[store]) if source == "oa_staff" else None
            referrer = rng.randrange(1, member_id) if source == "oa_referral" and member_id > 1 else None
            gender = rng.choice(("male", "female", "female", "undisclosed", "\\N"))
            birthday = (
                date(rng.randrange(1960, 2008), rng.randrange(1, 13), rng.randrange(1, 29)).isoformat()
                if rng.random() < 0.7
                else "\\N"
            )
            left = (END - registered).total_seconds()
            moments = sorted(registered + timedelta(seconds=rng.random() * left) for _ in range(counts[i]))
            spend = balance = 0
            for moment in moments:
                purchase_id += 1
                at = moment
                shop = store if rng.random() < 0.7 else rng.randrange(STORES)
                lines = []
                amount = 0
                for sku, category, price, cost in rng.sample(products, rng.choice((1, 1, 2, 2, 3))):
                    qty = rng.choice((1, 1, 1, 2, 3))
                    amount += qty * price
                    lines.append(
                        {
                            "sku": sku,
                            "category": category,
                            "qty": qty,
                            "unit_price_fen": price,
                            "unit_cost_fen": cost,
                        }
                    )
                discount = amount // 20 if rng.random() < 0.3 else 0
                paid = amount - discount
                refunded = rng.random() < 0.01
                earned = paid // 100
                items = json.dumps(lines, ensure_ascii=False, separators=(",", ":"))
                purchases.write(
                    f"{purchase_id}\t1\t{member_id}\t{shop + 1}\t{rng.choice(staff_of[shop])}\t"
                    f"b{purchase_id}\tx\t"
                    f"{amount}\t{discount}\t0\t0\t{paid}\t{earned}\tf\tnormal\t0\t0\t[]\t{items}\t"
                    f"{'refunded' if refunded else 'completed'}\t{_ts(at)}\n"
                )
                if not refunded:
                    spend += paid
                points_id += 1
                balance += earned
                points.write(
                    f"{points_id}\t1\t{member_id}\t{earned}\tearn_purchase\tearn:b{purchase_id}\t\tsystem\t\t{balance}\t{_ts(at)}\n"
                )
                if refunded:
                    points_id += 1
                    balance -= earned
                    points.write(
                        f"{points_id}\t1\t{member_id}\t{-earned}\treverse\trev:b{purchase_id}\t\tsystem\t\t{balance}\t{_ts(at)}\n"
                    )
                if balance >= 2000 and rng.random() < 0.15:
                    points_id += 1
                    spent = balance // 2
                    balance -= spent
                    points.write(
                        f"{points_id}\t1\t{member_id}\t{-spent}\tspend_redemption\tmall:{points_id}\t\tsystem\t\t{balance}\t"
                        f"{_ts(at + timedelta(minutes=5))}\n"
                    )
            if balance > 0 and moments and (END - moments[-1]).days > 365:
                points_id += 1
                expired, balance = balance, 0
                lapse = moments[-1] + timedelta(days=365)
                points.write(
                    f"{points_id}\t1\t{member_id}\t{-expired}\texpire\texpire:{member_id}\t\tsystem\t\t0\t{_ts(lapse)}\n"
                )
            last_visit = _ts(moments[-1]) if moments else NULL
            referrer_id = str(referrer) if referrer else NULL
            staff_id = str(staff) if staff else NULL
            members.write(
                f"{member_id}\t1\tB{member_id:07d}\tt\t\\N\t\\N\t{gender}\t{birthday}\t{_ts(registered)}\t{source}\t"
                f"{referrer_id}\t{staff_id}\t{store + 1}\t{last_visit}\t{spend}\n"
            )
            tier = (
                "normal"
                if spend < 200_000
                else "silver"
                if spend < 600_000
                else "gold"
                if spend < 1_500_000
                else "diamond"
            )
            if tier != "normal":
                tiers.write(f"{member_id}\t1\t{member_id}\t{tier}\t{_ts(registered)}\n")
    (folder / "done").write_text(json.dumps({"members": scale.members, "purchases": scale.purchases}))
    return folder


COPIES = (
    ("member", "member", "(id, merchant_id, code, subscribed, name, phone, gender, birthday, registered_at,"
     " source, referrer_id, acquired_by_id, store_id, last_visit_at, lifetime_spend_fen)"),
    ("purchase", "purchase", "(id, merchant_id, member_id, store_id, staff_id, idempotency_key,"
     " request_digest, amount_fen, discount_fen, offset_points, offset_fen, paid_fen, points_earned,"
     " points_pending, tier_code, period_spend_fen, points_today_before, breakdown, items, status,"
     " created_at)"),
    ("points", "points_transaction", "(id, merchant_id, member_id, delta, kind, idempotency_key, reference,"
     " actor, reason, balance_after, created_at)"),
    ("tier", "member_tier", "(id, merchant_id, member_id, tier_code, since)"),
)  # fmt: skip


async def _setup(conn: asyncpg.Connection) -> None:
    """The merchant, its stores, staff, products, mall and programme (the small tables)."""
    rng = random.Random(7)
    await conn.execute(
        "INSERT INTO merchant (id, slug, name, timezone, oa_appid, oa_secret, oa_token, oa_aes_key, mp_appid,"
        " mp_secret, retention_grace_days, created_at) VALUES (1, 'bench', '分析基准商户', 'Asia/Shanghai',"
        " '', '', '', '', '', '', 30, $1)",
        START,
    )
    await conn.executemany(
        "INSERT INTO store (id, merchant_id, code, name, created_at) VALUES ($1, 1, $2, $3, $4)",
        [(s + 1, f"S{s + 1:02d}", f"门店{s + 1:02d}", START) for s in range(STORES)],
    )
    await conn.executemany(
        "INSERT INTO staff (id, merchant_id, store_id, username, role, password_hash, active, failed_logins,"
        " created_at) VALUES ($1, 1, $2, $3, 'cashier', 'x', true, 0, $4)",
        [
            (s * STAFF_PER_STORE + k + 1, s + 1, f"staff{s * STAFF_PER_STORE + k + 1}", START)
            for s in range(STORES)
            for k in range(STAFF_PER_STORE)
        ],
    )
    await conn.executemany(
        "INSERT INTO product (merchant_id, sku, name, category, price_fen, cost_fen, active, created_at,"
        " updated_at) VALUES (1, $1, $1, $2, $3, $4, true, $5, $5)",
        [
            (sku, category, price, cost, START)
            for sku, category, price, cost in _products(random.Random(20261130))
        ],
    )
    await conn.executemany(
        "INSERT INTO mall_item (merchant_id, kind, name, description, image_url, category, price_points,"
        " cash_fen, stock, min_tier_rank, stored_value_fen, pickup_days, active, sort, created_at,"
        " updated_at, low_stock_threshold)"
        " VALUES (1, 'shipped', $1, '', '', '', 1000, 0, $2, 0, 0, 14, true, 0, $3, $3, $4)",
        [(f"礼品{n:03d}", rng.randrange(0, 500), START, rng.choice((None, 10, 20, 50))) for n in range(300)],
    )
    await conn.execute(
        "INSERT INTO loyalty_program (merchant_id, settings, updated_at) VALUES (1, $1, $2)",
        json.dumps({"points_per_yuan_cash": 100}),
        START,
    )
    await conn.executemany(
        "INSERT INTO points_pool (merchant_id, code, budget, granted, created_at) VALUES (1, $1, $2, $3, $4)",
        [(f"pool{n}", 1_000_000, rng.randrange(0, 1_000_000), START) for n in range(10)],
    )


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    """A gzip file's content in 1 MiB chunks, for asyncpg's COPY FROM STDIN."""
    with gzip.open(path, "rb") as source:
        while chunk := source.read(1 << 20):
            yield chunk


async def load(scale: Scale, *, log: object = print) -> float:
    """Make the bench database hold `scale`'s data (generate, migrate, COPY, rebuild the rollups) unless it
    already does; returns the seconds it took (0 when cached)."""
    url = database_url()
    base, _, name = url.rpartition("/")
    admin = await asyncpg.connect(dsn(f"{base}/postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn(url))
    try:
        have = await conn.fetchval(
            "SELECT tag FROM bench_dataset"
            if await conn.fetchval("SELECT to_regclass('bench_dataset')")
            else "SELECT NULL"
        )
    finally:
        await conn.close()
    if have == scale.tag:
        await _ensure_extras(url)
        return 0.0
    took = await _load(url, scale, log)
    await _ensure_extras(url)
    return took


async def _load(url: str, scale: Scale, log: object) -> float:
    started = time.monotonic()
    say = log if callable(log) else print
    folder = generate(scale)
    say(f"files ready in {time.monotonic() - started:.0f} s")
    from tests.support import dbutil  # the same migration runner as the tests

    await dbutil.reset_postgres(url)
    await dbutil.migrate(url)
    conn = await asyncpg.connect(dsn(url))
    try:
        await conn.execute("SET session_replication_role = replica; SET maintenance_work_mem = '512MB'")
        await _setup(conn)
        for file, table, columns in COPIES:
            began = time.monotonic()
            await conn.copy_to_table(
                table, source=_chunks(folder / f"{file}.tsv.gz"), columns=_names(columns), format="text"
            )
            say(f"COPY {table} in {time.monotonic() - began:.0f} s")
        for table in ("member", "purchase", "points_transaction", "member_tier"):
            await conn.execute(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")
        await _extras(conn)
        await conn.execute("SET session_replication_role = origin")
        began = time.monotonic()
        await conn.execute("SET work_mem = '256MB'")
        steps = 0  # in batches, each its own transaction (migration 0026)
        while (
            await conn.fetchval("SELECT memberbot_analytics_rebuild_step(1, $1)", 500_000, timeout=None)
            != "done"
        ):
            steps += 1
        say(f"rollups rebuilt in {time.monotonic() - began:.0f} s ({steps + 1} transactions)")
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CREATE TABLE bench_dataset (tag text NOT NULL)")
        await conn.execute("INSERT INTO bench_dataset VALUES ($1)", scale.tag)
    finally:
        await conn.close()
    return time.monotonic() - started


_EXTRAS = r"""
-- A level-1 award for every referred member who bought (the referral ranking).
INSERT INTO referral_award (merchant_id, referee_id, referrer_id, level, points, created_at)
SELECT 1, m.id, m.referrer_id, 1, 100, m.registered_at + interval '3 days'
  FROM member m WHERE m.referrer_id IS NOT NULL AND m.lifetime_spend_fen > 0;
-- Mall orders of the shipped gifts: one member in twenty, half of them open (regions, deliveries, stock).
INSERT INTO mall_order (merchant_id, member_id, item_id, qty, points, cash_fen, status, idempotency_key,
                        address, local_day, created_at)
SELECT 1, m.id, 1 + m.id % 300, 1, 1000, 0,
       CASE WHEN m.id % 80 = 0 THEN 'to_ship' WHEN m.id % 80 = 20 THEN 'shipped' ELSE 'fulfilled' END,
       'bench-' || m.id,
       jsonb_build_object('name', '会员', 'phone', '13800000000', 'detail', '某路1号',
                          'region', (ARRAY['广东省', '浙江省', '江苏省', '上海市', '北京市', '四川省'])
                                    [1 + m.id % 6] || ' 某市 某区'),
       (m.last_visit_at AT TIME ZONE 'Asia/Shanghai')::date, m.last_visit_at
  FROM member m WHERE m.id % 20 = 0 AND m.last_visit_at IS NOT NULL;
"""


_MONTH_CATEGORIES = r"""
INSERT INTO sales_month_category (merchant_id, month, store_id, category, qty, revenue_fen, cost_fen,
                                  costed_revenue_fen)
SELECT merchant_id, date_trunc('month', day)::date, store_id, category, sum(qty), sum(revenue_fen),
       sum(cost_fen), sum(costed_revenue_fen)
  FROM sales_day_category GROUP BY 1, 2, 3, 4;
ANALYZE sales_month_category;
"""


async def _extras(conn: asyncpg.Connection) -> None:
    await conn.execute(_EXTRAS)


async def _ensure_extras(url: str) -> None:
    """What was added after the first loads, applied once to a cached database: the referral awards and
    mall orders, the default ladder's top tier, the migrations merged since, and the analytics
    migrations' latest functions, tables and indexes (their scripts are idempotent)."""
    from tests.support import dbutil  # the same migration runner as the tests

    conn = await asyncpg.connect(dsn(url))
    try:  # loaded before the analytics migration was renumbered on merge
        await conn.execute(
            "UPDATE tortoise_migrations SET name = '0021_analytics' WHERE name = '0022_analytics'"
        )
    finally:
        await conn.close()
    await dbutil.migrate(url)  # migrations merged since the load (e.g. 0019_credit)
    migration = importlib.import_module("migrations.0021_analytics")
    conn = await asyncpg.connect(dsn(url))
    try:
        await conn.execute(migration.ROLLUPS)
        await conn.execute(migration.APPLY)
        for later in ("0023_analytics_indexes", "0024_analytics_cycle_index"):
            await conn.execute(importlib.import_module(f"migrations.{later}").INDEXES)
        # 0021's refresh and rebuild again as 0026 and 0028 left them.
        for later in ("0026_analytics_rebuild_batches", "0028_analytics_rebuild_guard"):
            await conn.execute(importlib.import_module(f"migrations.{later}").FUNCTIONS)
        await conn.execute("DROP INDEX IF EXISTS member_gender_birthday")
        await conn.execute(
            "VACUUM ANALYZE sales_day, sales_day_category, sales_day_product, member_day, member_stats"
        )
        await conn.execute("UPDATE member_tier SET tier_code = 'diamond' WHERE tier_code = 'platinum'")
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM sales_month_category)"):
            await conn.execute(_MONTH_CATEGORIES)
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM mall_order)"):
            await _extras(conn)
            await conn.execute("ANALYZE referral_award; ANALYZE mall_order")
    finally:
        await conn.close()


def _names(columns: str) -> list[str]:
    return [name.strip() for name in columns.strip("()").split(",")]
