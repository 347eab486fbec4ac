"""Segments and automatic tags on 1,000,000 members: `POST /api/admin/segments/preview` latency (target:
under 500 ms each) and the time to compute and recompute automatic tags.

The data set is written with PostgreSQL COPY (binary, asyncpg) — minutes, not hours: `BENCH_SEGMENT_MEMBERS`
members (default 1,000,000) with gender, birthday, source, last visit and lifetime spend; one in five in a
higher tier; `BENCH_SEGMENT_PURCHASES` completed purchases (default 1,000,000, spread over the past two
years, each with one or two items of eight SKUs in four categories); five manual tags held by 2 %–30 % of the
members. The purchase triggers that keep `member.last_visit_at` / `lifetime_spend_fen` are skipped for the
load (`session_replication_role = replica`), and those columns are written consistently from the same
generator instead; so are the `member_facts` rows segments read (`memberbot_member_facts_rebuild`, what
the triggers would have written). Then `VACUUM ANALYZE` (the state autovacuum keeps a table in),
`memberbot serve`, a manager's login, and the measurements, over HTTP:

- preview: each expression `ROUNDS` times (count + a sample of 10), median and worst, beside the same-run
  floor: the bare `SELECT count(*)` of the merchant's live members (asyncpg, no HTTP, the
  `member_live_ids` index), timed `ROUNDS` times just before each expression's previews — the least any
  count can cost on this machine at that moment; the ratio is preview median / floor median;
- automatic tags: created through `POST /api/admin/tags` (which queues the computation; no worker runs
  here), then computed by `POST /api/admin/tags/{id}/recompute` (every member inserted) and recomputed
  by it again (nothing changed), each timed (`BENCH_SEGMENT_AUTO=0` skips them).

`BENCH_SEGMENT_REUSE=1` keeps the data set of an earlier run when the database holds it (the same
member count): only `memberbot migrate` (new migrations apply to the existing rows), the earlier run's
automatic tags deleted, `VACUUM ANALYZE`, and the measurements — minutes saved per run.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import services
from bench.harness import table
from bench.services import DATABASE_URL, REDIS_URL

TITLE = "preview on 1,000,000 members, automatic tag computation"
MEMBERS = int(os.environ.get("BENCH_SEGMENT_MEMBERS", "1000000"))
PURCHASES = int(os.environ.get("BENCH_SEGMENT_PURCHASES", "1000000"))
ROUNDS = int(os.environ.get("BENCH_SEGMENT_ROUNDS", "5"))
REUSE = os.environ.get("BENCH_SEGMENT_REUSE", "") == "1"
AUTO = os.environ.get("BENCH_SEGMENT_AUTO", "1") != "0"
FLOOR_SQL = "SELECT count(*) FROM member WHERE merchant_id = $1 AND anonymized_at IS NULL"
TARGET_MS = 500.0
CHUNK = 100_000
NOW = datetime.now(UTC).replace(microsecond=0)
SKUS = [
    ("TEA-1", "茶饮", 1800),
    ("TEA-2", "茶饮", 2200),
    ("CAKE-1", "烘焙", 2800),
    ("CAKE-2", "烘焙", 3600),
    ("SNACK-1", "零食", 900),
    ("SNACK-2", "零食", 1200),
    ("GIFT-1", "礼盒", 16800),
    ("GIFT-2", "礼盒", 26800),
]
SOURCES = ["oa_subscribe", "oa_subscribe", "oa_subscribe", "mini_program", "oa_staff", "import"]
GENDERS = ["male", "female", "female", None]
TAG_SHARES = {"新品尝鲜": 0.30, "VIP": 0.05, "生日会员": 0.08, "沉睡唤醒": 0.20, "黑名单": 0.02}
RFM = {"type": "rfm", "window_days": 365, "recency_days": 30, "frequency": 3, "monetary_fen": 30_000}


def member_rows(merchant_id: int, start: int, stop: int, spend: dict[int, tuple[int, datetime]]) -> list[Any]:
    pick = random.Random(start)
    rows = []
    for n in range(start, stop):
        fen, visit = spend.get(n, (0, None))  # type: ignore[arg-type]
        registered = NOW - timedelta(days=pick.randrange(1, 1500), seconds=pick.randrange(86_400))
        born = date(pick.randrange(1950, 2008), pick.randrange(1, 13), pick.randrange(1, 29))
        rows.append(
            (
                merchant_id,
                f"B{n:09d}",
                f"oBench{n:012d}",
                f"139{n:08d}",
                f"会员{n}",
                pick.choice(GENDERS),
                born if n % 3 else None,
                registered,
                pick.choice(SOURCES),
                n % 10 != 0,
                visit,
                fen,
                "",
            )
        )
    return rows


MEMBER_COLUMNS = (
    "merchant_id",
    "code",
    "openid",
    "phone",
    "name",
    "gender",
    "birthday",
    "registered_at",
    "source",
    "subscribed",
    "last_visit_at",
    "lifetime_spend_fen",
    "blocked_reason",
)
PURCHASE_COLUMNS = (
    "merchant_id",
    "member_id",
    "idempotency_key",
    "request_digest",
    "amount_fen",
    "discount_fen",
    "offset_points",
    "offset_fen",
    "paid_fen",
    "points_earned",
    "points_pending",
    "tier_code",
    "period_spend_fen",
    "points_today_before",
    "breakdown",
    "items",
    "status",
    "created_at",
)


def purchase_plan(count: int) -> list[tuple[int, int, datetime, str]]:
    """(member number, paid fen, when, items JSON): buyers skewed so some are frequent."""
    pick = random.Random(7)
    plan = []
    for _ in range(count):
        n = int(MEMBERS * pick.random() ** 2) if pick.random() < 0.5 else pick.randrange(MEMBERS)
        items = []
        for sku, category, price in pick.sample(SKUS, pick.choice((1, 1, 2))):
            items.append(
                {"sku": sku, "category": category, "qty": pick.randrange(1, 4), "unit_price_fen": price}
            )
        paid = sum(i["qty"] * i["unit_price_fen"] for i in items)
        when = NOW - timedelta(days=pick.randrange(0, 730), seconds=pick.randrange(86_400))
        plan.append((n, paid, when, json.dumps(items, ensure_ascii=False)))
    return plan


async def generate(merchant_id: int) -> dict[str, float]:
    """COPY the data set; the seconds each part took."""
    timings: dict[str, float] = {}
    connection = await asyncpg.connect(DATABASE_URL)
    try:
        await connection.execute("SET session_replication_role = replica")
        started = time.monotonic()
        plan = purchase_plan(PURCHASES)
        spend: dict[int, tuple[int, datetime]] = {}
        for n, paid, when, _ in plan:
            fen, last = spend.get(n, (0, when))
            spend[n] = (fen + paid, max(last, when))
        for start in range(0, MEMBERS, CHUNK):
            rows = member_rows(merchant_id, start, min(start + CHUNK, MEMBERS), spend)
            await connection.copy_records_to_table("member", records=rows, columns=MEMBER_COLUMNS)
        first_id = await connection.fetchval("SELECT min(id) FROM member WHERE merchant_id = $1", merchant_id)
        timings["members"] = time.monotonic() - started
        started = time.monotonic()
        for start in range(0, len(plan), CHUNK):
            rows = [
                (
                    merchant_id,
                    first_id + n,
                    f"bench-{start + k}",
                    "x",
                    paid,
                    0,
                    0,
                    0,
                    paid,
                    0,
                    False,
                    "",
                    0,
                    0,
                    "[]",
                    items,
                    "completed",
                    when,
                )
                for k, (n, paid, when, items) in enumerate(plan[start : start + CHUNK])
            ]
            await connection.copy_records_to_table("purchase", records=rows, columns=PURCHASE_COLUMNS)
        timings["purchases"] = time.monotonic() - started
        started = time.monotonic()
        await connection.execute(
            """INSERT INTO member_tier (merchant_id, member_id, tier_code, since)
               SELECT merchant_id, id, CASE WHEN id % 10 = 0 THEN 'gold' ELSE 'silver' END, now()
                 FROM member WHERE merchant_id = $1 AND id % 5 = 0""",
            merchant_id,
        )
        for n, (name, share) in enumerate(TAG_SHARES.items()):
            tag_id = await connection.fetchval(
                """INSERT INTO tag (merchant_id, name, kind, rule_version, member_count,
                                  created_at, updated_at)
                   VALUES ($1, $2, 'manual', 0, 0, now(), now()) RETURNING id""",
                merchant_id,
                name,
            )
            await connection.execute(
                """INSERT INTO member_tag (tag_id, member_id, added_at)
                   SELECT $1, id, now() FROM member
                    WHERE merchant_id = $2 AND abs(hashtext(id::text || $3)) % 10000 < $4""",
                tag_id,
                merchant_id,
                str(n),
                int(share * 10000),
            )
            await connection.execute(
                "UPDATE tag SET member_count = (SELECT count(*) FROM member_tag WHERE tag_id = $1)"
                " WHERE id = $1",
                tag_id,
            )
        timings["tiers and tags"] = time.monotonic() - started
        started = time.monotonic()
        await connection.execute("SELECT memberbot_member_facts_rebuild($1)", merchant_id)
        timings["segment facts"] = time.monotonic() - started
        started = time.monotonic()
        await connection.execute("VACUUM ANALYZE")  # what autovacuum gets to: statistics, visibility map
        timings["vacuum analyze"] = time.monotonic() - started
    finally:
        await connection.close()
    return timings


async def seed() -> int:
    from handlers.staff.accounts import create_staff
    from handlers.staff.merchants import MerchantInput, create_merchant

    async with services.orm(DATABASE_URL):
        merchant = await create_merchant(MerchantInput(slug="bench", name="压测门店"))
        await create_staff(
            merchant, store_code="main", username="boss", role="manager", password=services.STAFF_PASSWORD
        )
        return merchant.id


async def tag_ids(merchant_id: int) -> dict[str, int]:
    connection = await asyncpg.connect(DATABASE_URL)
    try:
        rows = await connection.fetch("SELECT id, name FROM tag WHERE merchant_id = $1", merchant_id)
    finally:
        await connection.close()
    return {row["name"]: row["id"] for row in rows}


def expressions(tags: dict[str, int]) -> dict[str, dict[str, Any]]:
    female = {"attr": "gender", "op": "eq", "value": "female"}
    return {
        "one tag (30 %)": {"tag": tags["新品尝鲜"]},
        "tag AND female AND NOT tag": {
            "and": [{"tag": tags["新品尝鲜"]}, female, {"not": {"tag": tags["黑名单"]}}]
        },
        "(tag OR tag) AND last visit ≥ 60 d": {
            "and": [
                {"or": [{"tag": tags["VIP"]}, {"tag": tags["沉睡唤醒"]}]},
                {"attr": "last_visit_days", "op": "gte", "value": 60},
            ]
        },
        "tier in (silver, gold) AND spend ≥ 500 元": {
            "and": [
                {"attr": "tier", "op": "in", "value": ["silver", "gold"]},
                {"attr": "lifetime_spend_fen", "op": "gte", "value": 50_000},
            ]
        },
        "age 25–35 AND birthday month 6 AND subscribed": {
            "and": [
                {"attr": "age", "op": "between", "value": [25, 35]},
                {"attr": "birthday_month", "op": "eq", "value": 6},
                {"attr": "subscribed", "op": "eq", "value": True},
            ]
        },
        "NOT (tag OR tag OR tag)": {
            "not": {"or": [{"tag": tags["VIP"]}, {"tag": tags["生日会员"]}, {"tag": tags["黑名单"]}]}
        },
    }


AUTO_RULES = {
    "RFM 重要价值客户": {**RFM, "segment": "重要价值客户"},
    "RFM 一般挽留客户": {**RFM, "segment": "一般挽留客户"},
    "偏好烘焙 (category, 365 d)": {
        "type": "preference",
        "by": "category",
        "values": ["烘焙"],
        "window_days": 365,
    },
    "客单价 ≥ 50 元 (365 d)": {"type": "avg_ticket", "window_days": 365, "min_fen": 5_000},
    "流失风险 (90 d)": {"type": "churn", "days": 90},
    "金卡": {"type": "tier", "tiers": ["gold"]},
}


async def timed_post(session: aiohttp.ClientSession, path: str, body: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    async with session.post(path, json=body) as response:
        payload = await response.json()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status >= 300:
            raise RuntimeError(f"{path}: {response.status} {payload}")
    return elapsed, payload


async def floor_ms(connection: asyncpg.Connection, merchant_id: int) -> list[float]:
    """The bare count of the merchant's live members, `ROUNDS` times: milliseconds each."""
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await connection.fetchval(FLOOR_SQL, merchant_id)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def preview_rows(
    session: aiohttp.ClientSession, merchant_id: int, tags: dict[str, int]
) -> list[list[Any]]:
    """Each expression's previews beside the floor measured just before them."""
    rows = []
    connection = await asyncpg.connect(DATABASE_URL)
    try:
        for label, expression in expressions(tags).items():
            floor = statistics.median(await floor_ms(connection, merchant_id))
            times, count = [], 0
            for _ in range(ROUNDS):
                elapsed, payload = await timed_post(
                    session, "/api/admin/segments/preview", {"expression": expression}
                )
                times.append(elapsed)
                count = payload["count"]
            worst, median = max(times), statistics.median(times)
            met = "met" if worst < TARGET_MS else "not met"
            rows.append([label, count, median, worst, met, floor, f"{median / floor:.1f}"])
    finally:
        await connection.close()
    return rows


async def measure(
    base_url: str, merchant_id: int, tags: dict[str, int]
) -> tuple[list[list[Any]], list[list[Any]], list[list[Any]]]:
    """Previews; the automatic tags (when `AUTO`); then the previews again, after the tags' writes (every
    tagged member's `member_facts` row rewritten, as autovacuum has left the table by then)."""
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(base_url, timeout=timeout) as session:
        token = await services.staff_token(session, base_url, "bench", "boss")
        session.headers["Authorization"] = f"Bearer {token}"
        previews = await preview_rows(session, merchant_id, tags)
        autos: list[list[Any]] = []
        for name, rule in AUTO_RULES.items() if AUTO else ():
            _, created = await timed_post(session, "/api/admin/tags", {"name": name[:32], "rule": rule})
            path = f"/api/admin/tags/{created['id']}/recompute"
            first, counts = await timed_post(session, path, None)  # its queued computation waits for a worker
            again, unchanged = await timed_post(session, path, None)
            changed = unchanged["added"] + unchanged["removed"]
            autos.append([name, counts["members"], f"{first / 1000:.1f}", f"{again / 1000:.1f}", changed])
        after = await preview_rows(session, merchant_id, tags) if autos else []
    return previews, autos, after


async def reusable() -> int | None:
    """The merchant of an earlier run's data set still in the database (the same size), or None."""
    try:
        connection = await asyncpg.connect(DATABASE_URL)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        merchant_id = await connection.fetchval("SELECT id FROM merchant WHERE slug = 'bench'")
        if merchant_id is None:
            return None
        members = await connection.fetchval("SELECT count(*) FROM member WHERE merchant_id = $1", merchant_id)
        return int(merchant_id) if members == MEMBERS else None
    except asyncpg.PostgresError:  # no schema yet
        return None
    finally:
        await connection.close()


async def reuse(merchant_id: int) -> dict[str, float]:
    """Bring an earlier run's data set to this code: new migrations, its automatic tags gone."""
    started = time.monotonic()
    migrated = services.cli(["migrate"], DATABASE_URL, REDIS_URL)
    if migrated.returncode:
        raise RuntimeError(f"memberbot migrate failed: {migrated.stderr}")
    timings = {"migrate": time.monotonic() - started}
    started = time.monotonic()
    connection = await asyncpg.connect(DATABASE_URL)
    try:
        autos = "SELECT id FROM tag WHERE merchant_id = $1 AND kind = 'auto'"
        await connection.execute(f"DELETE FROM member_tag WHERE tag_id IN ({autos})", merchant_id)
        await connection.execute("DELETE FROM tag WHERE merchant_id = $1 AND kind = 'auto'", merchant_id)
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    timings["vacuum analyze"] = time.monotonic() - started
    return timings


async def run() -> str:
    await services.fresh_redis()
    kept = await reusable() if REUSE else None
    if kept is None:
        await services.fresh_postgres()
        merchant_id = await seed()
        timings = await generate(merchant_id)
    else:
        merchant_id, timings = kept, await reuse(kept)
    tags = await tag_ids(merchant_id)
    with tempfile.TemporaryDirectory(prefix="memberbot-bench-") as tmp:
        server = services.memberbot("segments", DATABASE_URL, REDIS_URL, Path(tmp))
        await server.start()
        try:
            previews, autos, after = await measure(server.url, merchant_id, tags)
        finally:
            server.stop()
    generated = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
    loaded = "COPY" if kept is None else "kept from an earlier run"
    headers = [
        "preview",
        "count",
        "median ms",
        "worst ms",
        f"< {TARGET_MS:.0f} ms",
        "floor ms",
        "median / floor",
    ]
    lines = [
        f"data set: {MEMBERS:,} members, {PURCHASES:,} purchases, {len(tags)} manual tags"
        f" ({loaded}: {generated})",
        table(headers, previews),
        "floor: the bare count of the merchant's live members in the same run, just before each row",
    ]
    if autos:
        lines.append(
            table(["automatic tag", "members", "first computation s", "recompute s", "changed"], autos)
        )
        lines += ["previews again, after the automatic tags' writes:", table(headers, after)]
    return "\n".join(lines)
