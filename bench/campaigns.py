"""A subscribe-message campaign to BENCH_CAMPAIGN_RECIPIENTS members (default 100,000), every one
holding a grant, through `memberbot worker` to `memberbot wechat-sim` on its own port — three times:

1. throughput: one worker, messages/s at the simulator (first to last accepted send, its own clock)
   beside a bare aiohttp client posting the same bodies to the same simulator in the same run
   (`sending.CONCURRENCY` requests in flight, one access token), half of its sends just before the
   worker's campaign and half just after, so both sides see the same stretch of the machine's load (its
   rate: both halves' sends over the sum of their spans); the worker's peak RSS
   (`BENCH_CAMPAIGN_PROFILE=<file>`: this worker runs under cProfile, its stats written there);
2. crashes: one worker SIGKILLed twice mid-campaign (at a third and two thirds) and restarted, its
   tasks' leases moved past instead of waited for (two minutes), the sweep handing them to the new one;
3. two workers sharing the campaign.

Each memberbot run must deliver exactly N messages, none twice (the simulator's count of distinct
(openid, client_msg_id) among its accepted sends, asked once a campaign is done: while it sends, its
progress is read from the database, since counting the simulator's records stalls the simulator).
Target: memberbot ≥ 50% of the bare client's rate, worker RSS < 300 MiB. The bare client sends N/4
messages (its rate does not need more; the simulator keeps every request it records in memory, cleared
between runs). The report ends with the CPU time per message of each side (bare client, worker,
simulator, PostgreSQL), which a noisy host moves less than it moves the rates.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from arq import create_pool

from bench import services
from bench.harness import ROOT, Server, cpu_seconds, free_port, python_argv, rss_mib, table
from bench.services import DATABASE_URL, REDIS_URL

TITLE = (
    "subscribe campaign: memberbot worker(s) → WeChat simulator vs a bare aiohttp client; crashes; 2 workers"
)
RECIPIENTS = int(os.environ.get("BENCH_CAMPAIGN_RECIPIENTS", "100000"))
TARGET_RATIO = 0.50
RSS_LIMIT_MIB = 300
MP_APPID, MP_SECRET = "wxbenchmp00000001", "bench-mp-secret"
TEMPLATE = "TPL-PROMO"
SEND = "cgi-bin/message/subscribe/send"
FIELDS = {"thing1": "{{ member_name }}，会员日到啦", "thing2": "{{ merchant_name }}"}
RUNS = 3  # campaigns per member: each member gets RUNS grants here, RUNS + 1 at the simulator


def simulator(workdir: Path) -> Server:
    argv = python_argv("-m", "bot", "wechat-sim", "--port", str(free_port()))
    return Server(
        "wechat-sim", argv, {}, int(argv[-1]), log_path=workdir / "sim.log", ready_path="/sim/stats"
    )


async def seed(database_url: str) -> tuple[int, str, list[str]]:
    """The merchant (any hour, RUNS campaigns a day allowed) and its members with grants: (merchant id,
    slug, openids)."""
    from handlers.campaigns import manage
    from handlers.staff.merchants import MerchantInput, create_merchant
    from models.merchant import Merchant

    async with services.orm(database_url):
        merchant = await create_merchant(
            MerchantInput(slug="bench", name="bench 门店", mp_appid=MP_APPID, mp_secret=MP_SECRET)
        )
        await Merchant.filter(id=merchant.id).update(quiet_start_minute=0, quiet_end_minute=0)
        await manage.set_caps(merchant, marketing_per_day=RUNS, sms_per_day=1, actor="bench")
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            """
            INSERT INTO member (merchant_id, code, mp_openid, name, subscribed, registered_at, source,
                                lifetime_spend_fen, blocked_reason, sms_consent)
            SELECT $1, 'B' || lpad(n::text, 8, '0'), 'mp-bench-' || n, '会员' || n, false, now(),
                   'mini_program', 0, '', false
              FROM generate_series(1, $2) AS n
            """,
            merchant.id,
            RECIPIENTS,
        )
        await connection.execute(
            """
            INSERT INTO subscribe_grant (merchant_id, member_id, template_id, accepted, used, updated_at)
            SELECT merchant_id, id, $2, $3, 0, now() FROM member WHERE merchant_id = $1
            """,
            merchant.id,
            TEMPLATE,
            RUNS,
        )
    finally:
        await connection.close()
    return merchant.id, merchant.slug, [f"mp-bench-{n}" for n in range(1, RECIPIENTS + 1)]


async def set_up_simulator(sim_url: str, openids: list[str]) -> None:
    async with aiohttp.ClientSession(sim_url) as session:

        async def control(path: str, body: dict[str, Any]) -> None:
            async with session.post(path, json=body) as response:
                if response.status != 200:
                    raise RuntimeError(f"simulator {path}: {await response.text()}")

        await control("/sim/apps", {"appid": MP_APPID, "secret": MP_SECRET})
        await control("/sim/templates", {"appid": MP_APPID, "template_id": TEMPLATE})
        for start in range(0, len(openids), 10_000):
            batch = openids[start : start + 10_000]
            await control(
                "/sim/bulk/grants",
                {"appid": MP_APPID, "template_id": TEMPLATE, "openids": batch, "count": RUNS + 1},
            )


async def sim_get(sim_url: str, path: str, **params: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        aiohttp.ClientSession(sim_url, timeout=timeout) as session,
        session.get(path, params=params) as response,
    ):
        answer: dict[str, Any] = await response.json()
        return answer


async def clear_records(sim_url: str) -> None:
    async with aiohttp.ClientSession(sim_url) as session, session.delete("/sim/records") as response:
        response.raise_for_status()


async def bare_client(sim_url: str, openids: list[str], prefix: str) -> float:
    """One subscribe message per openid, the campaign's body, CONCURRENCY in flight; wall seconds."""
    from handlers.campaigns.sending import CONCURRENCY

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(sim_url, connector=connector) as session:
        body = {"grant_type": "client_credential", "appid": MP_APPID, "secret": MP_SECRET}
        async with session.post("/cgi-bin/stable_token", json=body) as response:
            token = (await response.json())["access_token"]
        pending = iter(enumerate(openids))
        started = time.perf_counter()

        async def post() -> None:
            for n, openid in pending:
                message = {
                    "touser": openid,
                    "template_id": TEMPLATE,
                    "data": {"thing1": {"value": f"会员{n}，会员日到啦"}, "thing2": {"value": "bench 门店"}},
                    "miniprogram_state": "formal",
                    "lang": "zh_CN",
                    "page": "pages/index/index",
                    "client_msg_id": f"{prefix}-{n}",
                }
                raw = json.dumps(message, ensure_ascii=False).encode()
                headers = {"Content-Type": "application/json; charset=utf-8"}
                async with session.post(
                    f"/{SEND}", params={"access_token": token}, data=raw, headers=headers
                ) as r:
                    answer = json.loads(await r.read())
                    if answer.get("errcode"):
                        raise RuntimeError(f"bare client refused: {answer}")

        await asyncio.gather(*(post() for _ in range(CONCURRENCY)))
        return time.perf_counter() - started


class Workers:
    """`memberbot worker` processes, each logging to its own file; the peak RSS seen of each."""

    def __init__(self, sim_url: str, workdir: Path) -> None:
        self.env = {**os.environ, **services.server_env(DATABASE_URL, REDIS_URL), "WECHAT_API_BASE": sim_url}
        self.env["LOG_LEVEL"] = "INFO"
        self.workdir = workdir
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.peak_rss: dict[str, float] = {}

    def start(self, name: str, profile: str = "") -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        profiled = ("-m", "cProfile", "-o", profile) if profile else ()
        process = subprocess.Popen(
            python_argv(*profiled, "-m", "bot", "worker"), env=self.env, cwd=ROOT, stdout=log, stderr=log
        )
        self.running[name] = process
        return process

    def sample(self) -> None:
        for name, process in self.running.items():
            if process.poll() is None:
                with suppress(OSError, RuntimeError):
                    self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), rss_mib(process.pid))

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.running.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()


async def started(workers: Workers, names: list[str], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all("Starting worker" in workers.log(n) for n in names):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("memberbot worker(s) did not start")


async def launch(database_url: str, merchant_id: int, name: str) -> int:
    from bot.worker import arq_dispatch, redis_settings
    from handlers import effects
    from handlers.campaigns import manage
    from handlers.campaigns.manage import Draft
    from models.merchant import Merchant

    pool = await create_pool(redis_settings(REDIS_URL))
    try:
        async with services.orm(database_url):
            merchant = await Merchant.get(id=merchant_id)
            registry = effects.build(dispatch=arq_dispatch(pool))
            draft = Draft(
                name=name,
                channel="subscribe",
                content={"fields": FIELDS, "page": "pages/index/index"},
                template_id=TEMPLATE,
                holdout_pct=0,
                throttle_per_second=5000,
            )
            campaign = await manage.create(merchant, draft, actor="bench")
            now = datetime.now(UTC)
            await manage.validate(merchant, campaign.id, actor="bench", now=now)
            await manage.schedule(merchant, campaign.id, registry, at=None, actor="bench", now=now)
            return campaign.id
    finally:
        await pool.aclose()


async def crash_and_restart(database_url: str, workers: Workers, victim: str, successor: str) -> None:
    """SIGKILL `victim`; move its tasks' leases past (instead of waiting two minutes); start `successor`
    and sweep the due tasks to it (as its minute cron would)."""
    from bot.worker import redis_settings, sweep_effects
    from handlers import effects

    workers.kill(victim)
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "UPDATE task SET lease_until = $1 WHERE kind LIKE 'campaign.%' AND status = 'running'",
            datetime.now(UTC) - timedelta(seconds=1),
        )
    finally:
        await connection.close()
    workers.start(successor)
    await started(workers, [successor])
    pool = await create_pool(redis_settings(REDIS_URL))
    try:
        async with services.orm(database_url):
            await sweep_effects({"effects": effects.build(), "redis": pool})
    finally:
        await pool.aclose()


async def run_campaign(
    sim_url: str, database_url: str, workers: Workers, merchant_id: int, name: str, crashes: int = 0
) -> dict[str, Any]:
    """Launch a campaign and wait for it to be done; with `crashes`, kill the running worker that many
    times along the way. The simulator's counts (asked once, at the end) and the wall time.

    Progress is watched in the database, never at the simulator while it works: counting its records
    walks every one of them on its event loop, which would slow the run being measured more the more it
    has delivered."""
    campaign_id = await launch(database_url, merchant_id, name)
    started_at = time.perf_counter()
    marks = [RECIPIENTS * (k + 1) // (crashes + 1) for k in range(crashes)]
    generation = len(workers.running)
    deadline = time.monotonic() + 3600
    connection = await asyncpg.connect(database_url)
    try:
        while True:
            await asyncio.sleep(0.5)
            workers.sample()
            if marks and await _sent(connection, campaign_id) >= marks[0]:
                marks.pop(0)
                victim = sorted(workers.running)[-1]
                generation += 1
                await crash_and_restart(database_url, workers, victim, f"worker-{generation}")
            if await _state(connection, campaign_id) == "done":
                break
            if time.monotonic() > deadline:
                sent = await _sent(connection, campaign_id)
                raise RuntimeError(f"campaign {name} did not finish: {sent} sent")
    finally:
        await connection.close()
    counted = await sim_get(sim_url, "/sim/deliveries", endpoint=SEND, prefix=f"c{campaign_id}-")
    counted["wall"] = time.perf_counter() - started_at
    counted["campaign_id"] = campaign_id
    return counted


async def _state(connection: asyncpg.Connection, campaign_id: int) -> str:
    return str(await connection.fetchval("SELECT state FROM campaign WHERE id = $1", campaign_id))


async def _sent(connection: asyncpg.Connection, campaign_id: int) -> int:
    """Recipients recorded sent (a chunk's outcomes are written after its calls: a little behind the
    simulator, which is all a crash mark needs)."""
    query = "SELECT count(*) FROM campaign_recipient WHERE campaign_id = $1 AND status = 'sent'"
    return int(await connection.fetchval(query, campaign_id))


def span(counted: dict[str, Any]) -> float:
    return float((counted["last_at"] or 0) - (counted["first_at"] or 0))


def rate(counted: dict[str, Any]) -> float:
    seconds = counted["span"] if "span" in counted else span(counted)
    return counted["delivered"] / seconds if seconds > 0 else 0.0


def halves(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The bare client's two halves as one side: their sends over the sum of their own spans (and each
    half's own rate, to show how far the machine moved between them)."""
    summed = {key: before[key] + after[key] for key in ("delivered", "unique", "duplicates")}
    return {**summed, "span": span(before) + span(after), "halves": (rate(before), rate(after))}


def postgres_cpu_seconds() -> float:
    """CPU time of this machine's PostgreSQL processes so far (0 when it runs elsewhere)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(entry.name))
    return total


class CpuMeter:
    """CPU seconds spent by each side of a measured stretch: the bench process itself (the bare
    client), the simulator, the running workers and PostgreSQL. Less moved by a noisy neighbour than
    wall-clock rates: CPU time per message is the cost of a message, whatever else the host does."""

    def __init__(self, sim: Server, workers: Workers) -> None:
        self.sim, self.workers = sim, workers
        self.spent: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        running = [p.pid for p in self.workers.running.values() if p.poll() is None]
        return {
            "client": time.process_time(),
            "sim": self.sim.cpu_seconds(),
            "worker": sum(cpu_seconds(pid) for pid in running),
            "postgres": postgres_cpu_seconds(),
        }

    async def measure(self, label: str, stretch: Any) -> Any:
        before = self._now()
        result = await stretch
        after = self._now()
        for key, value in after.items():
            self.spent[f"{label}:{key}"] = self.spent.get(f"{label}:{key}", 0.0) + value - before[key]
        return result

    def per_message(self, label: str, key: str, messages: int) -> float:
        """µs of `key`'s CPU per message over the stretches labelled `label`."""
        return self.spent.get(f"{label}:{key}", 0.0) / messages * 1e6 if messages else 0.0


async def run() -> str:
    try:
        await services.fresh_postgres()
        await services.fresh_redis()
    except services.Unavailable as exc:
        return f"skipped: {exc} (set BENCH_DATABASE_URL / BENCH_REDIS_URL)"
    with tempfile.TemporaryDirectory(prefix="memberbot-bench-") as tmp:
        sim = simulator(Path(tmp))
        workers = Workers("", Path(tmp))
        try:
            await sim.start()
            workers = Workers(sim.url, Path(tmp))
            seeded = time.perf_counter()
            merchant_id, _, openids = await seed(DATABASE_URL)
            await set_up_simulator(sim.url, openids)
            seed_seconds = time.perf_counter() - seeded
            meter = CpuMeter(sim, workers)
            half = max(RECIPIENTS // 8, 1)
            bare_wall = await meter.measure("bare", bare_client(sim.url, openids[:half], "bare1"))
            before = await sim_get(sim.url, "/sim/deliveries", endpoint=SEND, prefix="bare1-")
            await clear_records(sim.url)
            workers.start("worker-1", os.environ.get("BENCH_CAMPAIGN_PROFILE", ""))
            await started(workers, ["worker-1"])
            one = await meter.measure(
                "one", run_campaign(sim.url, DATABASE_URL, workers, merchant_id, "throughput")
            )
            one_rss = max(workers.peak_rss.values())
            await clear_records(sim.url)
            bare_wall += await meter.measure("bare", bare_client(sim.url, openids[half : 2 * half], "bare2"))
            after = await sim_get(sim.url, "/sim/deliveries", endpoint=SEND, prefix="bare2-")
            bare = halves(before, after)
            await clear_records(sim.url)
            if os.environ.get("BENCH_CAMPAIGN_PROFILE"):
                workers.stop()  # its profile is written as it exits
                workers.start("worker-1b")
                await started(workers, ["worker-1b"])
            crashed = await run_campaign(sim.url, DATABASE_URL, workers, merchant_id, "crashes", crashes=2)
            workers.stop()
            await clear_records(sim.url)
            workers.start("worker-a")
            workers.start("worker-b")
            await started(workers, ["worker-a", "worker-b"])
            two = await run_campaign(sim.url, DATABASE_URL, workers, merchant_id, "two workers")
            both_ran = all("run_task" in workers.log(n) for n in ("worker-a", "worker-b"))
            peak = max(workers.peak_rss.values())
            sim_rss = sim.rss_mib()
        finally:
            workers.stop()
            sim.stop()
    costs = cpu_costs(meter, bare["delivered"], one["delivered"])
    return report(bare, bare_wall, one, one_rss, crashed, two, both_ran, peak, sim_rss, seed_seconds) + costs


def cpu_costs(meter: CpuMeter, bare_sends: int, worker_sends: int) -> str:
    """CPU µs per message on each side: the throughput campaign (from its launch to done, planning
    included) against the bare client's two halves."""
    bare = {key: meter.per_message("bare", key, bare_sends) for key in ("client", "sim", "postgres")}
    one = {key: meter.per_message("one", key, worker_sends) for key in ("worker", "sim", "postgres")}
    return (
        f"\nCPU µs per message — bare client {bare['client']:.0f}, simulator under it {bare['sim']:.0f}; "
        f"memberbot worker {one['worker']:.0f}, simulator under it {one['sim']:.0f}, "
        f"PostgreSQL {one['postgres']:.0f} (every backend, the bench's own queries included)"
    )


def report(
    bare: dict[str, Any],
    bare_wall: float,
    one: dict[str, Any],
    one_rss: float,
    crashed: dict[str, Any],
    two: dict[str, Any],
    both_ran: bool,
    peak: float,
    sim_rss: float,
    seed_seconds: float,
) -> str:
    def exact(counted: dict[str, Any]) -> str:
        ok = counted["delivered"] == counted["unique"] == RECIPIENTS and counted["duplicates"] == 0
        return "yes" if ok else "NO"

    bare_rate = rate(bare)
    ratio = rate(one) / bare_rate if bare_rate else 0.0
    head = ["run", "msgs/s", "wall s", "delivered", "distinct", "dups", "45065 resends", "exactly N", "ratio"]
    rows: list[list[object]] = [
        [
            "bare aiohttp client (half before, half after)",
            bare_rate,
            bare_wall,
            bare["delivered"],
            bare["unique"],
            bare["duplicates"],
            "-",
            "-",
            "1.00",
        ],
        [
            "1 memberbot worker",
            rate(one),
            one["wall"],
            one["delivered"],
            one["unique"],
            one["duplicates"],
            one["refused"],
            exact(one),
            f"{ratio:.2f}",
        ],
        [
            "1 worker, SIGKILLed twice + restarted",
            rate(crashed),
            crashed["wall"],
            crashed["delivered"],
            crashed["unique"],
            crashed["duplicates"],
            crashed["refused"],
            exact(crashed),
            "-",
        ],
        [
            "2 memberbot workers",
            rate(two),
            two["wall"],
            two["delivered"],
            two["unique"],
            two["duplicates"],
            two["refused"],
            exact(two),
            "-",
        ],
    ]
    met = "met" if ratio >= TARGET_RATIO else "NOT met"
    rss_met = "met" if peak < RSS_LIMIT_MIB else "NOT met"
    return (
        f"{RECIPIENTS} recipients each with a grant, holdout 0, throttle 5000/s; bare client "
        f"{bare['delivered']} sends ({bare['halves'][0]:,.0f} msgs/s before, "
        f"{bare['halves'][1]:,.0f} after); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"Python {sys.version.split()[0]}; seeding {seed_seconds:.0f} s\n"
        + table(head, rows)
        + f"\n\nmemberbot (1 worker) at {ratio:.0%} of the bare client's rate (target >= {TARGET_RATIO:.0%}: "
        f"{met}); worker RSS peak {one_rss:.0f} MiB in the throughput run, {peak:.0f} MiB in any run "
        f"(target < {RSS_LIMIT_MIB} MiB: {rss_met}); both workers ran send tasks: "
        f"{'yes' if both_ran else 'NO'}; counting the simulator's records took {one['ms']:.0f} ms; "
        f"simulator RSS {sim_rss:.0f} MiB"
    )
