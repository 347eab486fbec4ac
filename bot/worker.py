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

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from arq import cron, func
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function
from tortoise import Tortoise

from bot.settings import Settings
from handlers import jobs
from handlers.core.schedule import SCHEDULE_TIMEZONE, Entry
from handlers.jobs import SCHEDULE
from models import tortoise_config

EMBEDDED_REDIS_REFUSAL = (
    "REDIS_URL=memory:// is the single-process mode: `memberbot serve` runs the jobs itself "
    "(embedded scheduler). A worker needs real Redis (redis://…)"
)
JOB_TIMEOUT_SECONDS = 3600


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


async def shutdown(ctx: dict[str, Any]) -> None:
    await Tortoise.close_connections()


async def run_job(ctx: dict[str, Any], job: str, now: str | None = None) -> jobs.Counts:
    """On demand: run `job` at `now` (ISO 8601 with offset; default: the current time)."""
    at = datetime.fromisoformat(now) if now else datetime.now(UTC)
    return await jobs.run_job(job, at)


def _scheduled(job: str) -> Any:
    async def scheduled(ctx: dict[str, Any]) -> jobs.Counts:
        return await jobs.run_job(job, datetime.now(UTC))

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
    )
    cron_jobs: Sequence[CronJob] | None = tuple(cron_job(entry) for entry in SCHEDULE)
    job_timeout = JOB_TIMEOUT_SECONDS
    keep_result = 3600
