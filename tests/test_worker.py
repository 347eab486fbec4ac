"""The arq worker: cron jobs on Asia/Shanghai wall-clock times, and a burst worker running a DB job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from arq import create_pool
from arq.cron import next_cron
from arq.worker import create_worker
from tortoise import Tortoise

from bot.cli import main
from bot.settings import Settings
from bot.worker import WorkerSettings, redis_settings
from handlers.core.schedule import next_due
from handlers.jobs import SCHEDULE
from handlers.loyalty import config as loyalty_config
from handlers.loyalty.ledger_audit import audit_points
from handlers.till.purchase import PurchaseRequest, record_purchase
from models import tortoise_config
from models.points import PointsAccount
from models.task import Task, TaskStatus
from tests.conftest import REDIS_URL
from tests.support.factories import EFFECTS, make_member, make_merchant

SHANGHAI = ZoneInfo("Asia/Shanghai")
real_redis = pytest.mark.skipif(not REDIS_URL, reason="needs MEMBERBOT_TEST_REDIS_URL (real Redis)")


def test_cron_jobs_follow_the_schedule_in_an_explicit_timezone() -> None:
    assert WorkerSettings.timezone == SHANGHAI
    crons = {c.name: c for c in WorkerSettings.cron_jobs or ()}
    assert set(crons) == {f"cron:{e.job}" for e in SCHEDULE}
    start = datetime(2026, 12, 31, 23, 0, tzinfo=SHANGHAI)  # late evening: the next 00:10 is next year
    for entry in SCHEDULE:
        job = crons[f"cron:{entry.job}"]
        assert (job.hour, job.minute, job.second, job.unique) == (entry.hour, entry.minute, 0, True)
        # arq's own computation from a Shanghai-local time lands on the same instant as the schedule's.
        arq_next = next_cron(start, hour=job.hour, minute=job.minute, second=0, microsecond=0)
        assert arq_next == next_due(start, entry)
    assert next_due(start, SCHEDULE[1]) == datetime(2026, 12, 31, 16, 10, tzinfo=UTC)


def test_worker_refuses_in_process_redis(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    with pytest.raises(ValueError, match="memory://"):
        redis_settings("memory://")
    monkeypatch.setenv("REDIS_URL", "memory://")
    monkeypatch.setenv("SECRET_KEY", "x" * 40)
    with pytest.raises(SystemExit) as exited:
        main(["worker"])
    assert exited.value.code == 2
    assert "memberbot serve` runs the jobs itself" in capsys.readouterr().err


@asynccontextmanager
async def orm(url: str) -> AsyncIterator[None]:
    await Tortoise.init(config=tortoise_config(url), _enable_global_fallback=True)
    try:
        yield
    finally:
        await Tortoise.close_connections()


@real_redis
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq 0.28 on redis 5
async def test_burst_worker_runs_an_enqueued_job_against_the_database(settings: Settings) -> None:
    bought = datetime.now(UTC) - timedelta(days=3)
    async with orm(settings.database_url):
        merchant = await make_merchant()
        program = {"pending_days": 1, "registration_bonus": 0}
        await loyalty_config.save_program(merchant.id, program, actor="t")
        member = await make_member(merchant)
        await record_purchase(
            merchant, None, PurchaseRequest("p", member.id, 10_000), now=bought, effects=EFFECTS
        )
        assert (await PointsAccount.get(member_id=member.id)).balance == 0
    pool = await create_pool(redis_settings(settings.redis_url))
    try:
        job = await pool.enqueue_job("run_job", "points_maintenance", _job_id="maintenance:test")
        assert job is not None
        # The same id while the first is queued is refused; the job itself is idempotent anyway.
        assert await pool.enqueue_job("run_job", "points_maintenance", _job_id="maintenance:test") is None
        worker = create_worker(
            WorkerSettings,
            redis_settings=redis_settings(settings.redis_url),
            burst=True,
            poll_delay=0.05,
            handle_signals=False,
            ctx={"settings": settings},
            cron_jobs=[],  # a burst across a minute boundary would also run the minute crons
        )
        try:
            assert await worker.run_check() == 1
        finally:
            await worker.close()
        assert await job.result(timeout=5) == {"released_lots": 1, "expired_members": 0}
    finally:
        await pool.aclose()
    async with orm(settings.database_url):
        assert (await PointsAccount.get(member_id=member.id)).balance == 100
        assert await audit_points() == []


async def test_worker_startup_refuses_in_process_redis(settings: Settings) -> None:
    from bot.worker import startup

    ctx: dict[str, Any] = {"settings": settings.model_copy(update={"redis_url": "memory://"})}
    with pytest.raises(RuntimeError, match="memory://"):
        await startup(ctx)


@real_redis
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq 0.28 on redis 5
async def test_the_worker_runs_due_effects_from_the_one_registry(settings: Settings) -> None:
    """A member registered by a process that died before its effect ran: the worker's sweep enqueues
    the task as a `run_task` job and a worker runs it with the same registry the app has."""
    from bot.worker import shutdown, startup, sweep_effects
    from handlers import effects
    from handlers.members import lookup as members

    async with orm(settings.database_url):
        merchant = await make_merchant()
        await loyalty_config.save_program(merchant.id, {"registration_bonus": 25}, actor="t")
        member = await members.create_member(merchant, openid="o-worker", subscribed=True)
        await Task.filter(kind=members.MEMBER_REGISTERED).update(lease_until=datetime.now(UTC))  # it died
    pool = await create_pool(redis_settings(settings.redis_url))
    worker = create_worker(
        WorkerSettings,
        redis_settings=redis_settings(settings.redis_url),
        burst=True,
        poll_delay=0.05,
        handle_signals=False,
        ctx={"settings": settings},
        cron_jobs=[],  # a run crossing a minute would also run the minutely sweep and count it
    )
    ctx: dict[str, Any] = {"settings": settings, "redis": pool}
    try:
        await startup(ctx)
        assert set(ctx["effects"].handlers) == set(effects.build().handlers)
        assert await sweep_effects(ctx) == {"enqueued": 1}
        assert await sweep_effects(ctx) == {"enqueued": 1}  # the same attempt: arq keeps one job
        ran = await worker.run_check()  # the registration, then whatever it caused (its notices)
        assert (await PointsAccount.get(member_id=member.id)).balance == 25
        assert (await Task.get(kind=members.MEMBER_REGISTERED)).status == TaskStatus.DONE
        assert ran == await Task.all().count() >= 1
        assert await Task.exclude(status=TaskStatus.DONE).count() == 0
    finally:
        await worker.close()
        await shutdown(ctx)
        await pool.aclose()


@real_redis
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq 0.28 on redis 5
async def test_tasks_dispatched_together_share_jobs_and_each_runs_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 tasks dispatched at once go out as `run_tasks` jobs of up to TASK_BATCH (10 here); a second
    dispatch of the same batch is the same job, and a task dispatched again alone runs nothing more."""
    from bot import worker as worker_module
    from bot.worker import arq_dispatch, shutdown, startup

    monkeypatch.setattr(worker_module, "TASK_BATCH", 10)
    from handlers.members import lookup as members

    async with orm(settings.database_url):
        merchant = await make_merchant()
        await loyalty_config.save_program(merchant.id, {"registration_bonus": 25}, actor="t")
        for n in range(12):
            await members.create_member(merchant, openid=f"o-batch-{n}", subscribed=True)
        await Task.filter(kind=members.MEMBER_REGISTERED).update(lease_until=datetime.now(UTC))  # died
        ids = sorted(await Task.filter(kind=members.MEMBER_REGISTERED).values_list("id", flat=True))
    pool = await create_pool(redis_settings(settings.redis_url))
    ctx: dict[str, Any] = {"settings": settings, "redis": pool}
    worker = create_worker(
        WorkerSettings,
        redis_settings=redis_settings(settings.redis_url),
        burst=True,
        poll_delay=0.05,
        handle_signals=False,
        ctx={"settings": settings},
    )
    try:
        await startup(ctx)
        dispatch = arq_dispatch(pool)
        await dispatch(ids)
        await dispatch(ids)  # the same jobs: arq keeps one of each
        queued = [job.function for job in await pool.queued_jobs()]
        assert queued == ["run_tasks", "run_tasks"]
        await dispatch(ids[:1])  # alone: a `run_task` job, whose claim finds the task taken or done
        await worker.run_check()
        for member in await members_of(merchant.id):
            assert (await PointsAccount.get(member_id=member)).balance == 25
        assert await Task.exclude(status=TaskStatus.DONE).count() == 0
        assert await audit_points() == []
    finally:
        await worker.close()
        await shutdown(ctx)
        await pool.aclose()


async def members_of(merchant_id: int) -> list[int]:
    from models.member import Member

    return list(await Member.filter(merchant_id=merchant_id).values_list("id", flat=True))
