"""At most once, with real processes: `memberbot worker` (arq on real Redis) sending notices to a
`memberbot wechat-sim` over HTTP. A worker killed mid-send and restarted sends nothing twice — the
template message is resent under its client_msg_id (WeChat keeps one), any other channel ends
`failed` (`outcome_unknown`); two workers on the same queued notices reach the simulator once each."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from arq import ArqRedis, create_pool
from tortoise.transactions import in_transaction

from bot import worker
from bot.settings import Settings
from bot.worker import arq_dispatch, redis_settings, sweep_effects
from handlers import effects
from handlers.core.tasks import Effects
from handlers.loyalty import config as loyalty_config
from handlers.notices import reach
from handlers.notices import settings as notice_settings
from handlers.notices.catalog import KINDS
from handlers.notices.delivery import NOTICE_SEND, queue_notice
from models.member import Member
from models.merchant import Merchant
from models.notice import DeliveryStatus, NoticeDelivery
from models.task import Task, TaskStatus
from tests.conftest import real_redis
from tests.support.factories import make_member, make_merchant
from tests.test_two_processes import ROOT, free_port, server_env

pytestmark = [real_redis, pytest.mark.slow]
TEMPLATE_SEND, CUSTOM_SEND = "cgi-bin/message/template/send", "cgi-bin/message/custom/send"
BY_TEMPLATE, BY_CUSTOM = "purchase_receipt", "order_shipped"  # one kind per channel
TEMPLATE_ID = "TPL-RECEIPT"
FINAL = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED)


class Processes:
    """The simulator and the workers of one test, each logging to its own file."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings, self.logs = settings, logs
        self.started: list[subprocess.Popen[bytes]] = []
        self.sim_url = f"http://127.0.0.1:{free_port()}"

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**server_env(self.settings, 1), "WECHAT_API_BASE": self.sim_url, "LOG_LEVEL": "INFO"}
        with (self.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 - our own CLI, arguments of ours
                [sys.executable, "-m", "bot", *args], env=env, cwd=ROOT, stdout=log, stderr=log
            )
        self.started.append(process)
        return process

    def worker(self, name: str) -> subprocess.Popen[bytes]:
        return self.start(name, "worker")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def all_logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.logs.glob("*.log"))
        )


@contextmanager
def processes(settings: Settings, logs: Path) -> Iterator[Processes]:
    running = Processes(settings, logs)
    port = running.sim_url.rsplit(":", 1)[1]
    running.start("sim", "wechat-sim", "--host", "127.0.0.1", "--port", port)
    try:
        yield running
    finally:
        for process in running.started:
            if process.poll() is None:
                process.terminate()
        for process in running.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Sim:
    """The simulator's control routes over HTTP."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url

    async def post(self, path: str, body: dict[str, Any]) -> None:
        async with self.http.post(f"{self.url}{path}", json=body) as response:
            assert response.status == 200, await response.text()

    async def records(self, endpoint: str) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.url}/sim/records", params={"endpoint": endpoint}) as response:
            records: list[dict[str, Any]] = (await response.json())["records"]
            return records

    async def wait_up(self, running: Processes) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                await self.records(TEMPLATE_SEND)
                return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        raise AssertionError(f"the simulator did not start:\n{running.all_logs()}")


async def shop(sim: Sim) -> Merchant:
    """A merchant sending receipts by template message and shipping notices by customer-service message,
    at any hour."""
    merchant = await make_merchant("shop")
    await sim.post("/sim/apps", {"appid": merchant.oa_appid, "secret": merchant.oa_secret})
    await sim.post(
        "/sim/templates",
        {"appid": merchant.oa_appid, "template_id": TEMPLATE_ID, "keys": list(KINDS[BY_TEMPLATE].fields)},
    )
    await notice_settings.save(
        merchant, BY_TEMPLATE, {"template_id": TEMPLATE_ID, "channels": ["template"]}, actor="test"
    )
    await notice_settings.save(merchant, BY_CUSTOM, {"channels": ["custom"]}, actor="test")
    await loyalty_config.save_program(merchant.id, {"registration_bonus": 0}, actor="test")
    await Merchant.filter(id=merchant.id).update(quiet_start_minute=0, quiet_end_minute=0)
    return await Merchant.get(id=merchant.id)


async def members(merchant: Merchant, sim: Sim, redis: ArqRedis, prefix: str, count: int) -> list[Member]:
    """Followers inside their 48-hour window (the simulator's and ours)."""
    made = []
    for n in range(count):
        openid = f"o-{prefix}-{n}"
        await sim.post("/sim/followers", {"appid": merchant.oa_appid, "openid": openid})
        await sim.post("/sim/interactions", {"appid": merchant.oa_appid, "openid": openid})
        await reach.window_opened(redis, merchant.id, openid, datetime.now(UTC))
        made.append(await make_member(merchant, openid=openid))
    return made


async def queue(registry: Effects, merchant: Merchant, kind: str, to: list[Member]) -> list[int]:
    """One notice of `kind` to each member, dispatched to the workers as arq jobs; the delivery ids."""
    async with in_transaction():
        queued = [
            await queue_notice(
                registry,
                kind,
                merchant_id=merchant.id,
                member_id=member.id,
                event_key=f"test:{member.id}",
                context=KINDS[kind].sample,
            )
            for member in to
        ]
    await registry.after_commit(*[q for q in queued if q is not None])
    return [d.id for d in await NoticeDelivery.filter(kind=kind).order_by("id")]


async def wait_for(check: Any, running: Processes, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} within {seconds} s:\n{running.all_logs()}")


async def both_polling(running: Processes) -> bool:
    """Both workers have started (arq logs its start before it polls the queue)."""
    return all("Starting worker" in running.log(name) for name in ("worker-1", "worker-2"))


async def settled() -> bool:
    return not await NoticeDelivery.exclude(status__in=FINAL).exists()


@pytest.fixture
async def pool(client: Any, settings: Settings) -> Any:
    arq = await create_pool(redis_settings(settings.redis_url))
    yield arq
    await arq.aclose()


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq 0.28 on redis 5
async def test_a_worker_killed_mid_send_and_restarted_sends_nothing_twice(
    pool: ArqRedis, settings: Settings, tmp_path: Path
) -> None:
    registry = effects.build(dispatch=arq_dispatch(pool))
    with processes(settings, tmp_path) as running:
        async with aiohttp.ClientSession() as http:
            sim = Sim(http, running.sim_url)
            await sim.wait_up(running)
            merchant = await shop(sim)
            by_template = await members(merchant, sim, pool, "t", 3)
            by_custom = await members(merchant, sim, pool, "c", 3)
            # WeChat takes each message at once and answers 8 s later: the worker dies waiting.
            for endpoint in (TEMPLATE_SEND, CUSTOM_SEND):
                await sim.post("/sim/errors", {"endpoint": endpoint, "errcode": 0, "delay": 8, "times": 3})
            first = running.worker("worker-1")
            templates = await queue(registry, merchant, BY_TEMPLATE, by_template)
            customs = await queue(registry, merchant, BY_CUSTOM, by_custom)

            async def all_in_flight() -> bool:
                return len(await sim.records(TEMPLATE_SEND)) == 3 and len(await sim.records(CUSTOM_SEND)) == 3

            await wait_for(all_in_flight, running, "six sends did not reach the simulator")
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            sending = await NoticeDelivery.filter(status=DeliveryStatus.SENDING).count()
            assert sending == 6, running.all_logs()
            # Two minutes later their leases have lapsed (moved here instead of waited for): a restarted
            # worker's sweep finds the six tasks due again.
            lapsed = datetime.now(UTC) - timedelta(seconds=1)
            await Task.filter(kind=NOTICE_SEND, status=TaskStatus.RUNNING).update(lease_until=lapsed)
            running.worker("worker-2")
            assert await sweep_effects({"effects": registry, "redis": pool}) == {"enqueued": 6}
            await wait_for(settled, running, "the notices did not settle after the restart")
            template_records = await sim.records(TEMPLATE_SEND)
            custom_records = await sim.records(CUSTOM_SEND)

    for delivery in await NoticeDelivery.filter(id__in=templates):
        assert (delivery.status, delivery.channel) == (DeliveryStatus.SENT, "template")
        assert delivery.msgid is not None
        mine = [r for r in template_records if r["body"]["client_msg_id"] == f"notice-{delivery.id}"]
        assert [r["errcode"] for r in mine] == [0, 45065]  # resent, refused as the duplicate it is
    for delivery in await NoticeDelivery.filter(id__in=customs):
        assert (delivery.status, delivery.reason) == (DeliveryStatus.FAILED, "outcome_unknown")
    openids = sorted(r["body"]["touser"] for r in custom_records)
    assert openids == sorted(str(m.openid) for m in by_custom)  # never repeated


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq 0.28 on redis 5
async def test_two_workers_on_the_same_queued_notices_send_each_once(
    pool: ArqRedis, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "TASK_BATCH", 10)  # jobs of 10, not 50: enough for both workers
    registry = effects.build()  # queued only: the sweep, then the dispatch, make each notice two jobs
    with processes(settings, tmp_path) as running:
        async with aiohttp.ClientSession() as http:
            sim = Sim(http, running.sim_url)
            await sim.wait_up(running)
            merchant = await shop(sim)
            by_template = await members(merchant, sim, pool, "t", 40)
            by_custom = await members(merchant, sim, pool, "c", 20)
            # Slow answers keep many sends in flight, so both workers are busy at once.
            for endpoint, times in ((TEMPLATE_SEND, 40), (CUSTOM_SEND, 20)):
                await sim.post(
                    "/sim/errors", {"endpoint": endpoint, "errcode": 0, "delay": 0.5, "times": times}
                )
            # Both workers poll the queue before the notices reach it, so both get some to race on.
            running.worker("worker-1")
            running.worker("worker-2")
            await wait_for(lambda: both_polling(running), running, "the workers did not start")
            templates = await queue(registry, merchant, BY_TEMPLATE, by_template)
            customs = await queue(registry, merchant, BY_CUSTOM, by_custom)
            # Every notice is an arq job twice (a sweep and the dispatch), for the two workers to race on.
            assert await sweep_effects({"effects": registry, "redis": pool}) == {"enqueued": 60}
            tasks = await Task.filter(kind=NOTICE_SEND).order_by("id").values_list("id", flat=True)
            await arq_dispatch(pool)(list(tasks))
            await wait_for(settled, running, "the notices did not settle")
            template_records = await sim.records(TEMPLATE_SEND)
            custom_records = await sim.records(CUSTOM_SEND)
            logs = running.log("worker-1"), running.log("worker-2")

    assert all(re.search(r"run_tasks?\(", log) for log in logs), "both workers ran notices"
    assert await NoticeDelivery.filter(status=DeliveryStatus.SENT).count() == 60
    assert sorted(r["body"]["client_msg_id"] for r in template_records) == sorted(
        f"notice-{i}" for i in templates
    )
    assert all(r["errcode"] == 0 for r in [*template_records, *custom_records])
    assert sorted(r["body"]["touser"] for r in custom_records) == sorted(str(m.openid) for m in by_custom)
    assert len(customs) == 20
