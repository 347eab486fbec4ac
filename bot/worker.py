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
from arq.constants import default_queue_name, expires_extra_ms, job_key_prefix, result_key_prefix
from arq.cron import CronJob
from arq.jobs import serialize_job
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.utils import timestamp_ms
from arq.worker import Function
from redis.asyncio import Redis
from tortoise import Tortoise

from bot.settings import Settings
from handlers import effects, jobs
from handlers.campaigns.sms import LoggingProvider, SmsProvider, TencentSms
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
TASK_BATCH = 200  # tasks per `run_tasks` job: notices in batches of 50, or tasks run side by side
SIDE_BY_SIDE = 10  # the tasks of a `run_tasks` job without a batch handler run at once, at most
# A `run_tasks` job's tasks without a batch handler run SIDE_BY_SIDE at a time, each within its own
# timeout; arq's for the whole job leaves room for all of them (a batch's part ends within one).
RUN_TASKS_TIMEOUT_SECONDS = TASK_TIMEOUT_SECONDS * -(-TASK_BATCH // SIDE_BY_SIDE) + 10


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
        dispatch=arq_dispatch(ctx["redis"]),
        services=NoticeServices(wechat, ctx["redis"]),
        sms=sms_provider(settings, ctx["session"]),
    )


def sms_provider(settings: Settings, http: aiohttp.ClientSession) -> SmsProvider:
    """The campaign SMS provider the settings choose (`SMS_PROVIDER`)."""
    if settings.sms_provider != "tencent" or settings.tencent_sms_secret_key is None:
        return LoggingProvider()
    return TencentSms(
        http,
        settings.tencent_sms_endpoint,
        settings.tencent_sms_secret_id,
        settings.tencent_sms_secret_key.get_secret_value(),
        settings.tencent_sms_sdk_app_id,
        settings.tencent_sms_sign_name,
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
    for job_id, function, args in _task_jobs(tasks):
        await pool.enqueue_job(function, *args, _job_id=job_id)


def _task_jobs(tasks: Sequence[tuple[int, str]]) -> list[tuple[str, str, tuple[Any, ...]]]:
    """(job id, function, arguments) of the jobs carrying `tasks`: `run_task` alone, else `run_tasks`
    of up to TASK_BATCH."""
    jobs: list[tuple[str, str, tuple[Any, ...]]] = []
    for start in range(0, len(tasks), TASK_BATCH):
        batch = tasks[start : start + TASK_BATCH]
        if len(batch) == 1:
            task_id, job_id = batch[0]
            jobs.append((job_id, "run_task", (task_id,)))
        else:
            job_id = "tasks:" + ",".join(job.removeprefix("task:") for _, job in batch)
            jobs.append((job_id, "run_tasks", ([task_id for task_id, _ in batch],)))
    return jobs


# arq's enqueue_job for many jobs in one round trip: each job is stored and queued unless its job key (or
# its result) exists. KEYS: the queue, then (job key, result key) per job; ARGV: now in ms, the jobs'
# lifetime in ms, then (job id, serialized job) per job.
_ENQUEUE = """
local queued = 0
for n = 1, (#ARGV - 2) / 2 do
  local job_key, result_key = KEYS[2 * n], KEYS[2 * n + 1]
  if redis.call('EXISTS', job_key, result_key) == 0 then
    redis.call('PSETEX', job_key, ARGV[2], ARGV[2 * n + 2])
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2 * n + 1])
    queued = queued + 1
  end
end
return queued
"""
BATCH_WINDOW_SECONDS = 0.02  # how long a dispatch waits for others to share its round trip


def arq_batch_dispatch(redis: Redis) -> Dispatch:
    """`arq_dispatch` for a serve process: the tasks of every request in the same `BATCH_WINDOW_SECONDS`
    reach Redis in ONE script call (the `run_task` / `run_tasks` jobs `enqueue_tasks` would write, with
    the same job ids), instead of arq's three round trips per job. Call it off the request's clock."""
    pending: list[int] = []
    script = redis.register_script(_ENQUEUE)

    async def flush() -> None:
        await asyncio.sleep(BATCH_WINDOW_SECONDS)
        ids = list(dict.fromkeys(pending))
        pending.clear()
        now = timestamp_ms()
        keys: list[str] = [default_queue_name]
        args: list[str | int | bytes] = [now, expires_extra_ms]
        for job_id, function, job_args in _task_jobs([(task_id, task_job_id(task_id, 0)) for task_id in ids]):
            keys += [job_key_prefix + job_id, result_key_prefix + job_id]
            args += [job_id, serialize_job(function, job_args, {}, None, now)]
        await script(keys=keys, args=args)

    async def dispatch(task_ids: Sequence[int]) -> None:
        first = not pending
        pending.extend(task_ids)
        if first:
            await flush()

    return dispatch


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
    """A batch of durable effects (`Effects.run_many`): notices claimed and sent together, the others
    SIDE_BY_SIDE at a time, each part held to `run_task`'s timeout (so none outlives its lease)."""
    await ctx["effects"].run_many(task_ids, side_by_side=SIDE_BY_SIDE, time_limit=TASK_TIMEOUT_SECONDS)


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
        func(run_tasks, name="run_tasks", timeout=RUN_TASKS_TIMEOUT_SECONDS, max_tries=1),
    )
    cron_jobs: Sequence[CronJob] | None = tuple(cron_job(entry) for entry in SCHEDULE)
    job_timeout = JOB_TIMEOUT_SECONDS
    keep_result = 3600
