"""签到 through the full Official Account webhook vs the bare wechatpy baseline, at 64 connections.

Every request is a WeChat-signed plaintext 签到 from a DIFFERENT pre-registered member of the demo
merchant (distinct openids, unique MsgIds), so each one really passes dedup, looks the member up,
locks the points account, writes a check-in and its ledger posting, and renders the reply. After the
run the check-ins actually written are counted in the database. memberbot runs on the embedded
default (embedded PostgreSQL 18 + in-process Redis), and on PostgreSQL + Redis (see bench.services)
as one process and as WORKERS=2 (two serve processes on one port, CPU and RSS summed over both; its
own members). The baseline is bench.baseline (one process: signature, wechatpy parse, fixed text
reply); the floor is that baseline plus the two round trips a check-in cannot skip (bench/floor.py).
Targets: memberbot on PostgreSQL + Redis at >= 70% of the floor's requests/s, p99 < 150 ms, RSS
< 200 MB per process.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench import floor, services
from bench.baseline import signature
from bench.harness import LoadResult, Report, Request, Server, Verdict, free_port, load, python_argv, table
from bench.services import DATABASE_URL, REDIS_URL
from bot.demo import DEMO

TITLE = "签到 via /wechat/demo (check-in + points write) vs bare wechatpy baseline, 64 connections"
CONNECTIONS = 64
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
ROUNDS = 2
WARMUP_SECONDS = 0.5
MEMBERS = int(os.environ.get("BENCH_CHECKIN_MEMBERS", "8000"))
TARGET_RATIO, TARGET_P99_MS, TARGET_RSS_MIB = 0.70, 150.0, 200.0  # the ratio: of the floor's req/s
ACCOUNT = "gh_demo00000000"
OPENID_PREFIX = "oCheckin"
WORKERS_PREFIX = "wCheckin"  # the members of the WORKERS=2 server (same database as memberbot-pg)
FLOOR_PREFIX = "fCheckin"


def checkin_requests(count: int, prefix: str = OPENID_PREFIX) -> list[Request]:
    """One signed 签到 per member, members in order, built before the clock starts."""
    stamp = str(int(time.time()))
    out = []
    for n in range(count):
        nonce, openid = str(secrets.randbelow(10**9)), f"{prefix}{n:020d}"
        xml = (
            f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
            f"</FromUserName><CreateTime>{stamp}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[签到]]></Content><MsgId>{secrets.randbits(62)}</MsgId></xml>"
        )
        params = {
            "signature": signature(DEMO.oa_token, stamp, nonce),
            "timestamp": stamp,
            "nonce": nonce,
            "openid": openid,
        }
        out.append(Request("/wechat/demo", params, xml.encode()))
    return out


def _ok(status: int, body: bytes) -> bool:
    return status == 200 and b"<MsgType><![CDATA[text]]></MsgType>" in body


@dataclass
class Measured:
    server: Server
    result: LoadResult = field(default_factory=LoadResult)
    rss_mib: float = 0.0
    checkins: int = -1  # written to the database; -1 for the baseline
    prefix: str = OPENID_PREFIX  # the openids of this server's members
    floor: bool = False  # bench.floor: the baseline plus the Redis claim and one INSERT


async def prepare(database_url: str, redis_url: str, prefixes: tuple[str, ...] = (OPENID_PREFIX,)) -> None:
    """Schema, the demo merchant, and MEMBERS subscribed members per openid prefix."""
    for args in (["migrate"], ["seed-demo", "--if-empty"]):
        done = services.cli(args, database_url, redis_url)
        if done.returncode:
            raise RuntimeError(f"memberbot {' '.join(args)} failed: {done.stderr}")
    for prefix in prefixes:
        services.seed_members(database_url, "demo", MEMBERS, prefix)


COUNT_SQL = (
    "select count(*) from checkin c join member m on m.id = c.member_id "
    "join points_transaction t on t.member_id = c.member_id and t.kind = 'earn_checkin' "
    "where m.openid like '{prefix}%'"
)


async def count_checkins(database_url: str, prefix: str) -> int:
    """Check-ins of one server's members that have their points posting (raw SQL)."""
    sql = COUNT_SQL.format(prefix=prefix)
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval(sql))
    finally:
        await connection.close()


async def _create_floor_table(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            f"create table {floor.CHECKIN_TABLE} (id bigserial primary key, "
            "openid text not null, day date not null, unique (openid, day))"
        )
    finally:
        await connection.close()


async def _count_floor(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval(f"select count(*) from {floor.CHECKIN_TABLE}"))
    finally:
        await connection.close()


async def measure(entries: list[Measured]) -> None:
    """Interleaved slices; each memberbot server consumes its own member list front to back."""
    batches = {m.server.name: iter(checkin_requests(MEMBERS, m.prefix)) for m in entries}
    for m in entries:
        await load(
            m.server.url, batches[m.server.name], connections=CONNECTIONS, seconds=WARMUP_SECONDS, check=_ok
        )
    for _ in range(ROUNDS):
        for m in entries:
            cpu = m.server.cpu_seconds()
            part = await load(
                m.server.url,
                batches[m.server.name],
                connections=CONNECTIONS,
                seconds=SECONDS / ROUNDS,
                check=_ok,
            )
            part.server_cpu_seconds = m.server.cpu_seconds() - cpu
            m.result.add(part)
    for m in entries:
        m.rss_mib = m.server.max_rss_mib()


def report(entries: list[Measured]) -> Report:
    base = entries[0].result
    by_name = {m.server.name: m for m in entries}
    floor_entry = next((m for m in entries if m.floor), None)
    floor_rps = floor_entry.result.rps if floor_entry else 0.0
    rows: list[list[object]] = []
    for m in entries:
        r = m.result
        rows.append(
            [
                m.server.name,
                r.rps,
                r.percentile(50),
                r.percentile(99),
                r.requests,
                r.errors,
                r.cpu_us_per_request,
                m.rss_mib,
                f"{r.rps / base.rps if base.rps else 0.0:.2f}",
                f"{r.rps / floor_rps if floor_rps else 0.0:.2f}" if floor_entry else "-",
                "-" if m.checkins < 0 else m.checkins,
            ]
        )
    head = [
        "server",
        "req/s",
        "p50 ms",
        "p99 ms",
        "requests",
        "errors",
        "CPU µs/req",
        "RSS MiB/process",
        "/ baseline",
        "/ floor",
        "check-ins written (incl. warm-up)",
    ]
    verdicts: list[Verdict] = []
    pg, two = by_name.get("memberbot-pg"), by_name.get("memberbot-pg-2w")
    if pg is not None and floor_entry is not None:
        verdicts += [
            Verdict("签到 webhook", "memberbot / floor (req/s)", pg.result.rps / floor_rps, TARGET_RATIO),
            Verdict(
                "签到 webhook",
                f"p99 ms at {CONNECTIONS} connections",
                pg.result.percentile(99),
                TARGET_P99_MS,
                at_most=True,
            ),
            Verdict("签到 webhook", "server CPU µs per check-in", pg.result.cpu_us_per_request, None),
        ]
    if pg is not None and two is not None:
        verdicts.append(
            Verdict(
                "签到 webhook",
                "WORKERS=2 / WORKERS=1 (req/s)",
                two.result.rps / pg.result.rps,
                None,
                note=f"p99 {two.result.percentile(99):.0f} ms",
            )
        )
    rss = [m.rss_mib for m in entries[1:] if not m.floor]
    verdicts.append(Verdict("签到 webhook", "RSS MiB per process", max(rss), TARGET_RSS_MIB, at_most=True))
    embedded = by_name.get("memberbot")
    if embedded is not None and floor_entry is not None:
        verdicts.append(
            Verdict(
                "签到 webhook",
                "embedded default / floor (req/s)",
                embedded.result.rps / floor_rps,
                None,
                note="fakeredis + PostgreSQL 18 from the wheel",
            )
        )
    notes = [
        f"{m.server.name}: the baseline plus the two round trips a check-in cannot skip (the Redis "
        "claim that makes a push take effect once, one INSERT of the day's check-in; bench/floor.py) "
        "— no webhook that checks in can beat its ratio here"
        for m in entries
        if m.floor
    ]
    text = (
        table(head, rows)
        + "\n\n"
        + "\n".join(f"{v.flow}: {v.measure} {v.value:,.2f} ({v.row()[4]})" for v in verdicts)
        + "\n"
        + "\n".join(notes)
    )
    return Report(text, verdicts)


async def run() -> Report:
    ambient = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="memberbot-bench-") as tmp,
        services.embedded_postgres(Path(tmp)) as embedded_url,
    ):
        workdir = Path(tmp)
        await prepare(embedded_url, "memory://")
        port = free_port()
        baseline = Server(
            "baseline",
            python_argv("-m", "bench.baseline", "--port", str(port)),
            {},
            port,
            log_path=workdir / "baseline.log",
        )
        embedded = services.memberbot("memberbot", embedded_url, "memory://", workdir)
        entries = [Measured(baseline), Measured(embedded)]
        databases = {"memberbot": embedded_url}
        skipped = ""
        try:
            await services.fresh_postgres()
            await services.fresh_redis()
            await prepare(DATABASE_URL, REDIS_URL, (OPENID_PREFIX, WORKERS_PREFIX))
            entries.append(Measured(services.memberbot("memberbot-pg", DATABASE_URL, REDIS_URL, workdir)))
            entries.append(
                Measured(
                    services.memberbot("memberbot-pg-2w", DATABASE_URL, REDIS_URL, workdir, workers=2),
                    prefix=WORKERS_PREFIX,
                )
            )
            databases["memberbot-pg"] = databases["memberbot-pg-2w"] = DATABASE_URL
            await _create_floor_table(DATABASE_URL)
            entries.append(Measured(services.floor_server(workdir), prefix=FLOOR_PREFIX, floor=True))
        except services.Unavailable as exc:
            skipped = f"\n(memberbot-pg skipped: {exc})"
        try:
            await asyncio.gather(*(m.server.start() for m in entries))
            await measure(entries)
        finally:
            for m in entries:
                m.server.stop()
        for m in entries[1:]:
            m.checkins = (
                await _count_floor(DATABASE_URL)
                if m.floor
                else await count_checkins(databases[m.server.name], m.prefix)
            )
    setup = (
        f"{CONNECTIONS} connections, {SECONDS:.0f} s per server in {ROUNDS} interleaved slices after "
        f"{WARMUP_SECONDS} s warm-up, one distinct pre-registered member per request ({MEMBERS} per "
        f"server), {os.cpu_count()} CPUs, load average {ambient:.1f} before, "
        f"Python {sys.version.split()[0]}"
    )
    result = report(entries)
    return Report(setup + "\n" + result.text + skipped, result.verdicts)
