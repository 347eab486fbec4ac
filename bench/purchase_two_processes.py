"""2,000 concurrent purchases on ONE member across two `memberbot serve` processes, then the audit.

Both processes share PostgreSQL + Redis. Every purchase has its own idempotency key; all of them are
in flight at once (half to each process), so every one of them waits for the same account lock.
Afterwards `memberbot audit points` checks balance == Σ transactions == Σ available lots. Target: 0
mismatches, every purchase recorded once, balance == Σ points the responses reported.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from bench import services
from bench.harness import LoadResult, Report, Verdict, table
from bench.services import DATABASE_URL, REDIS_URL

TITLE = "2,000 concurrent purchases on one member across two processes, then memberbot audit points"
PURCHASES = int(os.environ.get("BENCH_TWO_PROCESS_PURCHASES", "2000"))
IN_FLIGHT_PER_PROCESS = 250  # sockets per process; the rest queue client-side, all submitted at once


async def seed(database_url: str) -> int:
    from handlers.staff.accounts import create_staff
    from handlers.staff.merchants import MerchantInput, create_merchant

    async with services.orm(database_url):
        merchant = await create_merchant(MerchantInput(slug="bench", name="压测门店"))
        await create_staff(
            merchant, store_code="main", username="till", role="cashier", password=services.STAFF_PASSWORD
        )
        [member] = await services.bulk_members(merchant.id, 1, "oOneMember")
        return member


async def ledger(database_url: str, member_id: int) -> tuple[int, int]:
    from models.points import PointsAccount
    from models.purchase import Purchase

    async with services.orm(database_url):
        account = await PointsAccount.get(member_id=member_id)
        return account.balance, await Purchase.filter(member_id=member_id).count()


def bodies(member_id: int, process: int) -> Iterator[tuple[str, dict[str, Any]]]:
    for n in range(process, PURCHASES, 2):
        yield (
            "/api/staff/purchases",
            {"idempotency_key": f"one-{n}", "member_id": member_id, "amount_fen": 1_000 + (n % 9) * 100},
        )


async def run() -> Report | str:
    try:
        await services.fresh_postgres()
        await services.fresh_redis()
    except services.Unavailable as exc:
        return f"skipped: {exc} (set BENCH_DATABASE_URL / BENCH_REDIS_URL)"
    member_id = await seed(DATABASE_URL)
    with tempfile.TemporaryDirectory(prefix="memberbot-bench-") as tmp:
        servers = [services.memberbot(f"serve-{n}", DATABASE_URL, REDIS_URL, Path(tmp)) for n in (0, 1)]
        try:
            await asyncio.gather(*(server.start() for server in servers))
            async with aiohttp.ClientSession() as session:
                token = await services.staff_token(session, servers[0].url, "bench", "till")
            loads = await asyncio.gather(
                *(
                    services.json_load(
                        server.url,
                        bodies(member_id, n),
                        token=token,
                        connections=IN_FLIGHT_PER_PROCESS,
                        seconds=3600,
                        request_timeout=600,
                    )
                    for n, server in enumerate(servers)
                )
            )
            rss = [server.rss_mib() for server in servers]
        finally:
            for server in servers:
                server.stop()
    total = LoadResult()
    for part, _ in loads:
        total.add(part)
    total.seconds = max(part.seconds for part, _ in loads)
    replies = list(itertools.chain.from_iterable(r for _, r in loads))
    reported = sum(r["points_earned"] + r["tier_gift_points"] for r in replies)
    balance, recorded = await ledger(DATABASE_URL, member_id)
    code, mismatches = services.audit(DATABASE_URL, REDIS_URL)
    head = [
        "purchases",
        "ok",
        "errors",
        "wall s",
        "purchases/s",
        "p50 ms",
        "p99 ms",
        "RSS MiB (each)",
        "recorded",
        "balance",
        "Σ reported",
        "audit mismatches",
    ]
    row: list[object] = [
        PURCHASES,
        len(replies),
        total.errors,
        total.seconds,
        total.rps,
        total.percentile(50),
        total.percentile(99),
        " / ".join(f"{r:.0f}" for r in rss),
        recorded,
        balance,
        reported,
        mismatches,
    ]
    verdict = "met" if mismatches == 0 and code == 0 and recorded == len(replies) == PURCHASES else "NOT met"
    text = (
        f"{PURCHASES} purchases submitted at once, {IN_FLIGHT_PER_PROCESS} sockets per process, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
        + table(head, [row])
        + f"\n\naudit exit {code}, {mismatches} mismatches (target 0: {verdict}); balance "
        f"{'==' if balance == reported else '!='} Σ points reported by the responses"
    )
    exact = float(
        mismatches == 0 and code == 0 and recorded == len(replies) == PURCHASES and balance == reported
    )
    return Report(
        text,
        [
            Verdict("2,000 purchases on one member, 2 processes", "audit clean, all recorded once", exact, 1),
            Verdict("2,000 purchases on one member, 2 processes", "purchases/s", total.rps, None),
        ],
    )
