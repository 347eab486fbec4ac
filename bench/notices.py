"""10,000 purchase receipts through the durable queue and `memberbot worker` to the WeChat simulator,
vs a bare aiohttp client posting the same template-message bodies to the same simulator.

memberbot: the receipts are queued as a till purchase queues them (`queue_notice`: a delivery record
and its `notice.send` task, in transactions of 500), dispatched to arq as the app dispatches them
(`bot.worker.arq_dispatch`: `run_tasks` jobs of up to TASK_BATCH tasks), and delivered by
`memberbot worker` process(es) — per batch: claim the tasks, load the records, mark them `sending`,
render, `message/template/send` each, mark the outcomes, record the tasks' — to `memberbot wechat-sim` on
its own port. Baseline: one aiohttp session with as many requests in flight as the workers can have
(`handlers.notices.sending.IN_FLIGHT` each), posting the same bodies (another `client_msg_id`) with one
access token, half before and half after the workers' run. Rates are taken
at the simulator, from the first to the last accepted send of each side (its own clock), so both are
measured alike. Target: memberbot at >= 50% of the bare client's rate; exactly 10,000 distinct
receipts accepted, none twice.
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
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from arq import create_pool

from bench import services
from bench.harness import ROOT, Server, cpu_seconds, free_port, python_argv, rss_mib, table
from bench.services import DATABASE_URL, REDIS_URL
from bot.worker import TASK_BATCH
from handlers.notices import sending

TITLE = "10,000 purchase receipts: queue → memberbot worker → WeChat simulator vs a bare aiohttp client"
RECEIPTS = int(os.environ.get("BENCH_NOTICES", "10000"))
WORKERS = int(os.environ.get("BENCH_NOTICE_WORKERS", "1"))
JOBS_PER_WORKER = 10  # arq's max_jobs (bot.worker.WorkerSettings keeps arq's default)
# The most sends the workers can have under way.
IN_FLIGHT = min(JOBS_PER_WORKER * TASK_BATCH, sending.IN_FLIGHT) * WORKERS
TARGET_RATIO = 0.50
OA_APPID, OA_SECRET = "wxbenchoa00000001", "bench-oa-secret"
TEMPLATE_ID = "TPL-RECEIPT"
PREFIX = "oReceipt"
SEND = "cgi-bin/message/template/send"
CONTEXT = {
    "amount": "128.00",
    "discount": "6.40",
    "coupon": "",
    "paid": "121.60",
    "stored_value": "0.00",
    "points": 121,
    "pending": False,
    "balance": 1381,
    "store": "main",
}
# What the default receipt fields render to for that context (handlers.notices.catalog).
DATA = {"amount1": "121.60元", "thing2": "bench 门店", "number3": "121", "number4": "1381"}


def simulator(workdir: Path) -> Server:
    port = free_port()
    argv = python_argv("-m", "bot", "wechat-sim", "--port", str(port))
    return Server("wechat-sim", argv, {}, port, log_path=workdir / "sim.log", ready_path="/sim/stats")


async def set_up_simulator(sim_url: str, openids: list[str]) -> None:
    async with aiohttp.ClientSession(sim_url) as session:

        async def control(path: str, body: dict[str, Any]) -> None:
            async with session.post(path, json=body) as response:
                if response.status != 200:
                    raise RuntimeError(f"simulator {path}: {await response.text()}")

        await control("/sim/apps", {"appid": OA_APPID, "secret": OA_SECRET})
        await control("/sim/templates", {"appid": OA_APPID, "template_id": TEMPLATE_ID, "keys": list(DATA)})
        for start in range(0, len(openids), 50):
            await asyncio.gather(
                *(
                    control("/sim/followers", {"appid": OA_APPID, "openid": openid})
                    for openid in openids[start : start + 50]
                )
            )


async def seed_and_queue(database_url: str) -> tuple[list[str], list[int]]:
    """The merchant (template channel only), RECEIPTS members and one queued receipt each: (openids,
    task ids)."""
    from tortoise.transactions import in_transaction

    from handlers import effects
    from handlers.notices import settings as notice_settings
    from handlers.notices.delivery import queue_notice
    from handlers.staff.merchants import MerchantInput, create_merchant
    from models.member import Member

    registry = effects.build()  # no prompt dispatch: the benchmark dispatches through arq itself
    async with services.orm(database_url):
        merchant = await create_merchant(
            MerchantInput(slug="bench", name="bench 门店", oa_appid=OA_APPID, oa_secret=OA_SECRET)
        )
        receipt = {"channels": ["template"], "template_id": TEMPLATE_ID}
        await notice_settings.save(merchant, "purchase_receipt", receipt, actor="bench")
        members = await services.bulk_members(merchant.id, RECEIPTS, PREFIX)
        rows = await Member.filter(id__in=members).order_by("id").values_list("openid", flat=True)
        task_ids: list[int] = []
        for start in range(0, len(members), 500):
            async with in_transaction():
                for member_id in members[start : start + 500]:
                    queued = await queue_notice(
                        registry,
                        "purchase_receipt",
                        merchant_id=merchant.id,
                        member_id=member_id,
                        event_key=f"purchase:bench-{member_id}",
                        context=CONTEXT,
                    )
                    assert queued is not None and queued.id is not None
                    task_ids.append(queued.id)
        return [str(openid) for openid in rows], task_ids


async def dispatch(task_ids: list[int]) -> float:
    """Hand every task to arq the way the app does after commit; the seconds it took."""
    from bot.worker import arq_dispatch, redis_settings

    pool = await create_pool(redis_settings(REDIS_URL))
    try:
        started = time.perf_counter()
        await arq_dispatch(pool)(task_ids)
        return time.perf_counter() - started
    finally:
        await pool.aclose()


def start_workers(sim_url: str, workdir: Path) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        **services.server_env(DATABASE_URL, REDIS_URL),
        "WECHAT_API_BASE": sim_url,
    }
    workers = []
    for n in range(WORKERS):
        log = (workdir / f"worker-{n}.log").open("wb")
        argv = python_argv("-m", "bot", "worker")
        workers.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=log))
    return workers


async def idle(workers: list[subprocess.Popen[bytes]], within: float = 60) -> None:
    """Wait until every worker has started up (its CPU time stops growing)."""
    deadline = time.monotonic() + within
    last = [-1.0] * len(workers)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        for worker in workers:
            if worker.poll() is not None:
                raise RuntimeError(f"memberbot worker exited with {worker.returncode}")
        now = [cpu_seconds(w.pid) for w in workers]
        if all(current - before < 0.02 for current, before in zip(now, last, strict=True)):
            return
        last = now
    raise RuntimeError("memberbot worker did not settle")


async def delivered(
    database_url: str, workers: list[subprocess.Popen[bytes]], within: float
) -> dict[str, int]:
    """Wait until every receipt is settled (sent, failed or skipped); the count per status."""
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + within
        while True:
            rows = await connection.fetch("select status, count(*) as n from notice_delivery group by status")
            counts = {row["status"]: int(row["n"]) for row in rows}
            settled = sum(counts.get(s, 0) for s in ("sent", "failed", "skipped"))
            if settled >= RECEIPTS or time.monotonic() > deadline:
                return counts
            if any(worker.poll() is not None for worker in workers):
                raise RuntimeError("a memberbot worker exited during the run")
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


async def bare_client(sim_url: str, openids: list[str], label: str) -> float:
    """POST one template message per openid with IN_FLIGHT requests under way; wall seconds."""
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(sim_url, connector=connector) as session:
        token_body = {"grant_type": "client_credential", "appid": OA_APPID, "secret": OA_SECRET}
        async with session.post("/cgi-bin/stable_token", json=token_body) as response:
            token = (await response.json())["access_token"]
        data = {key: {"value": value} for key, value in DATA.items()}
        pending = iter(enumerate(openids))
        started = time.perf_counter()

        async def post() -> None:
            for n, openid in pending:
                body = {
                    "touser": openid,
                    "template_id": TEMPLATE_ID,
                    "client_msg_id": f"{label}-{n}",
                    "data": data,
                }
                raw = json.dumps(body, ensure_ascii=False).encode()
                headers = {"Content-Type": "application/json; charset=utf-8"}
                async with session.post(
                    f"/{SEND}", params={"access_token": token}, data=raw, headers=headers
                ) as r:
                    answer = json.loads(await r.read())
                    if answer.get("errcode"):
                        raise RuntimeError(f"bare client refused: {answer}")

        await asyncio.gather(*(post() for _ in range(IN_FLIGHT)))
        return time.perf_counter() - started


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGINT)
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def at_simulator(records: list[dict[str, Any]], *prefixes: str) -> tuple[int, int, float]:
    """(accepted sends whose client_msg_id starts with one of `prefixes`, distinct (openid, id), sends
    per second: their count over the simulator-clock spans from the first to the last of each prefix)."""
    accepted, distinct, span = 0, set(), 0.0
    for prefix in prefixes:
        mine = [r for r in records if str((r["body"] or {}).get("client_msg_id", "")).startswith(prefix)]
        ok = [r for r in mine if r["errcode"] == 0]
        accepted += len(ok)
        distinct |= {(r["body"]["touser"], r["body"]["client_msg_id"]) for r in ok}
        times = sorted(r["at"] for r in ok)
        span += times[-1] - times[0] if times else 0.0
    return accepted, len(distinct), accepted / span if span else 0.0


async def sim_records(sim_url: str) -> list[dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        aiohttp.ClientSession(sim_url, timeout=timeout) as session,
        session.get("/sim/records", params={"endpoint": SEND}) as response,
    ):
        records: list[dict[str, Any]] = (await response.json())["records"]
        return records


async def run() -> str:
    try:
        await services.fresh_postgres()
        await services.fresh_redis()
    except services.Unavailable as exc:
        return f"skipped: {exc} (set BENCH_DATABASE_URL / BENCH_REDIS_URL)"
    with tempfile.TemporaryDirectory(prefix="memberbot-bench-") as tmp:
        sim = simulator(Path(tmp))
        workers: list[subprocess.Popen[bytes]] = []
        try:
            await sim.start()
            openids, task_ids = await seed_and_queue(DATABASE_URL)
            await set_up_simulator(sim.url, openids)
            half = len(openids) // 2
            bare_wall = await bare_client(sim.url, openids[:half], "bare1")
            workers = start_workers(sim.url, Path(tmp))
            await idle(workers)
            cpu = [cpu_seconds(w.pid) for w in workers]
            started = time.perf_counter()
            enqueue_seconds = await dispatch(task_ids)
            counts = await delivered(DATABASE_URL, workers, within=1800)
            wall = time.perf_counter() - started
            worker_cpu = sum(cpu_seconds(w.pid) for w in workers) - sum(cpu)
            rss = [rss_mib(w.pid) for w in workers]
            stop(workers)
            bare_wall += await bare_client(sim.url, openids[half:], "bare2")
            records = await sim_records(sim.url)
            sim_rss = sim.rss_mib()
        finally:
            stop(workers)
            sim.stop()
    return report(records, counts, wall, enqueue_seconds, worker_cpu, rss, bare_wall, sim_rss)


def report(
    records: list[dict[str, Any]],
    counts: dict[str, int],
    wall: float,
    enqueue_seconds: float,
    worker_cpu: float,
    rss: list[float],
    bare_wall: float,
    sim_rss: float,
) -> str:
    sent, distinct, rate = at_simulator(records, "notice-")
    bare_sent, bare_distinct, bare_rate = at_simulator(records, "bare1-", "bare2-")
    refused = sum(1 for r in records if r["errcode"] != 0)
    ratio = rate / bare_rate if bare_rate else 0.0
    head = ["path", "notices/s", "wall s", "accepted", "distinct", "CPU µs/notice", "RSS MiB", "ratio"]
    rows: list[list[object]] = [
        ["bare aiohttp client (baseline)", bare_rate, bare_wall, bare_sent, bare_distinct, "-", "-", "1.00"],
        [
            f"queue → {WORKERS} memberbot worker(s)",
            rate,
            wall,
            sent,
            distinct,
            worker_cpu / max(sent, 1) * 1e6,
            " / ".join(f"{r:.0f}" for r in rss),
            f"{ratio:.2f}",
        ],
    ]
    exact = sent == distinct == counts.get("sent", 0) == RECEIPTS
    met = "met" if ratio >= TARGET_RATIO else "NOT met"
    return (
        f"{RECEIPTS} receipts, {WORKERS} worker(s) × {JOBS_PER_WORKER} jobs × {TASK_BATCH} tasks, "
        f"at most {sending.IN_FLIGHT} sends in flight each, "
        f"bare client {IN_FLIGHT} in flight, {os.cpu_count()} CPUs, load "
        f"average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}\n"
        + table(head, rows)
        + f"\n\nmemberbot at {ratio:.0%} of the bare client's rate (target >= {TARGET_RATIO:.0%}: {met}); "
        f"deliveries {counts}; exactly {RECEIPTS} distinct receipts accepted once each: "
        f"{'yes' if exact else 'NO'}; {refused} refused sends at the simulator; dispatching the "
        f"{RECEIPTS} arq jobs took {enqueue_seconds:.1f} s; simulator RSS {sim_rss:.0f} MiB"
    )
