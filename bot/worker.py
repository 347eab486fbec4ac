"""The arq worker (`memberbot worker`): the periodic jobs of `handlers.jobs` on `handlers.jobs.SCHEDULE`.

Cron times are wall-clock times in `SCHEDULE_TIMEZONE` (Asia/Shanghai), set explicitly both on the
worker (`WorkerSettings.timezone`) and in each cron's description, never taken from the machine.
Each cron is `unique`: with several workers, one of them runs a given tick. arq's job ids only dedupe
while the result key lives; the lasting guarantee is the jobs' own idempotency (ledger keys and
"due and not yet done" selections), so a job that runs twice does nothing the second time.

The ORM is initialised in `startup`, in the worker's main task, with tortoise's global fallback, so
the tasks arq spawns for jobs see it. `run_job` is the on-demand entry:
`await pool.enqueue_job("run_job", "points_maintenance", _job_id="points_maintenance:manual")`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
from arq import ArqRedis, cron, func
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function
from tortoise import Tortoise

from bot.settings import Settings
from handlers import effects, jobs
from handlers.core.schedule import SCHEDULE_TIMEZONE, Entry
from handlers.core.tasks import Dispatch
from handlers.jobs import SCHEDULE
from handlers.notices.delivery import NoticeServices
from handlers.wechat.client import WeChatClient
from models import tortoise_config

log = logging.getLogger(__name__)
EMBEDDED_REDIS_REFUSAL = (
    "REDIS_URL=memory:// is the single-process mode: `memberbot serve` runs the jobs itself "
    "(embedded scheduler). A worker needs real Redis (redis://…)"
)
JOB_TIMEOUT_SECONDS = 3600
TASK_TIMEOUT_SECONDS = 90  # under the task lease (handlers.core.tasks.LEASE): no two runs overlap
TASK_BATCH = 10  # tasks per `run_tasks` job (run side by side, each within its timeout)


def redis_settings(url: str) -> RedisSettings:
    """arq's connection settings for a redis://, rediss:// or unix:// URL; memory:// is refused."""
    if url.startswith("memory://"):
        raise ValueError(EMBEDDED_REDIS_REFUSAL)
    return RedisSettings.from_dsn(url)


def _env_redis_settings() -> RedisSettings:
    url = os.environ.get("REDIS_URL", "")
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisSettings.from_dsn(url)
    return RedisSettings()


async def startup(ctx: dict[str, Any]) -> None:
    """Settings (from `ctx["settings"]` if given, else the environment) and the ORM."""
    settings: Settings = ctx.get("settings") or Settings()
    if settings.redis_url.startswith("memory://"):
        raise RuntimeError(EMBEDDED_REDIS_REFUSAL)
    ctx["settings"] = settings
    await Tortoise.init(config=tortoise_config(settings.database_url), _enable_global_fallback=True)
    ctx["session"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10, connect=3))
    wechat = WeChatClient(ctx["session"], ctx["redis"], settings.wechat_api_url())
    ctx["effects"] = effects.build(
        dispatch=arq_dispatch(ctx["redis"]), services=NoticeServices(wechat, ctx["redis"])
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    if "session" in ctx:
        await ctx["session"].close()
    await Tortoise.close_connections()


async def run_job(ctx: dict[str, Any], job: str, now: str | None = None) -> jobs.Counts:
    """On demand: run `job` at `now` (ISO 8601 with offset; default: the current time)."""
    at = datetime.fromisoformat(now) if now else datetime.now(UTC)
    return await jobs.run_job(job, at, ctx["effects"])


def arq_dispatch(pool: ArqRedis) -> Dispatch:
    """How queued effects reach a worker promptly: one arq job per task, or per batch of up to
    TASK_BATCH tasks dispatched together (`_job_id` dedupes a second enqueue while the job or its result
    lives; each task's own claim is the lasting guarantee, whichever job carries it)."""

    async def dispatch(task_ids: Sequence[int]) -> None:
        await enqueue_tasks(pool, [(task_id, task_job_id(task_id, 0)) for task_id in task_ids])

    return dispatch


async def enqueue_tasks(pool: ArqRedis, tasks: Sequence[tuple[int, str]]) -> None:
    """(task id, its job id) as `run_task` jobs, or `run_tasks` jobs of up to TASK_BATCH (named by
    their tasks' job ids): an arq job costs the worker about seven Redis round trips, so a batch shares
    them."""
    for start in range(0, len(tasks), TASK_BATCH):
        batch = tasks[start : start + TASK_BATCH]
        if len(batch) == 1:
            task_id, job_id = batch[0]
            await pool.enqueue_job("run_task", task_id, _job_id=job_id)
        else:
            job_id = "tasks:" + ",".join(job.removeprefix("task:") for _, job in batch)
            await pool.enqueue_job("run_tasks", [task_id for task_id, _ in batch], _job_id=job_id)


def task_job_id(task_id: int, attempts: int, due_at: datetime | None = None) -> str:
    """The arq job id of one turn of a task: its first dispatch, or (`due_at`) the moment the sweep found
    it due. A turn after a crash must not share the dead run's id, whose job and result arq keeps for
    hours and would refuse to enqueue again."""
    if due_at is None:
        return f"task:{task_id}:{attempts}"
    return f"task:{task_id}:{attempts}:{int(due_at.timestamp() * 1000)}"


async def run_task(ctx: dict[str, Any], task_id: int) -> None:
    """One durable effect (claimed first: a task another worker runs, or already did, is skipped)."""
    await ctx["effects"].run(task_id)


async def run_tasks(ctx: dict[str, Any], task_ids: list[int]) -> None:
    """A batch of durable effects, side by side as their own `run_task` jobs would run: each claimed as
    `run_task` claims it and held to `run_task`'s timeout (so none outlives its lease); one that times
    out or fails does not stop the others."""

    async def run(task_id: int) -> None:
        try:
            await asyncio.wait_for(ctx["effects"].run(task_id), TASK_TIMEOUT_SECONDS)
        except Exception:  # a timeout, or the database gone: the task is due again when its lease lapses
            log.exception("task not run to its end", extra={"task_id": task_id})

    await asyncio.gather(*(run(task_id) for task_id in task_ids))


async def sweep_effects(ctx: dict[str, Any]) -> jobs.Counts:
    """The worker's `effects_sweep`: every due task (a retry after its backoff, the end of a deferral,
    or one whose process died) becomes an arq job, so all worker processes share them."""
    due = await ctx["effects"].due(datetime.now(UTC))
    await enqueue_tasks(
        ctx["redis"], [(task_id, task_job_id(task_id, attempts, due_at)) for task_id, attempts, due_at in due]
    )
    return {"enqueued": len(due)}


def _scheduled(job: str) -> Any:
    async def scheduled(ctx: dict[str, Any]) -> jobs.Counts:
        if job == "effects_sweep":
            return await sweep_effects(ctx)
        return await jobs.run_job(job, datetime.now(UTC), ctx["effects"])

    scheduled.__qualname__ = scheduled.__name__ = job
    return scheduled


def cron_job(entry: Entry) -> CronJob:
    return cron(
        _scheduled(entry.job),
        name=f"cron:{entry.job}",
        hour=entry.hour,
        minute=entry.minute if isinstance(entry.minute, int) else set(entry.minute),
        second=0,
        microsecond=0,
        unique=True,
        timeout=JOB_TIMEOUT_SECONDS,
        max_tries=1,
    )


class WorkerSettings:
    """`arq bot.worker.WorkerSettings`, or `memberbot worker` (which passes REDIS_URL explicitly)."""

    redis_settings = _env_redis_settings()
    timezone = SCHEDULE_TIMEZONE
    on_startup: StartupShutdown | None = startup
    on_shutdown: StartupShutdown | None = shutdown
    functions: Sequence[WorkerCoroutine | Function] = (
        func(run_job, name="run_job", timeout=JOB_TIMEOUT_SECONDS, max_tries=1),
        func(run_task, name="run_task", timeout=TASK_TIMEOUT_SECONDS, max_tries=1),
        func(run_tasks, name="run_tasks", timeout=TASK_TIMEOUT_SECONDS + 10, max_tries=1),
    )
    cron_jobs: Sequence[CronJob] | None = tuple(cron_job(entry) for entry in SCHEDULE)
    job_timeout = JOB_TIMEOUT_SECONDS
    keep_result = 3600
