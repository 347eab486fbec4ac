"""The embedded scheduler: `handlers.jobs.SCHEDULE` run in-process when REDIS_URL=memory://.

In the single-process mode (`make run`: embedded PostgreSQL + in-process Redis, no worker)
`embedded_scheduler`, a `cleanup_ctx` resource, runs the jobs the arq worker runs otherwise, on the
same times (wall-clock times in `SCHEDULE_TIMEZONE`, never the machine's zone).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from aiohttp import web

from handlers import jobs
from handlers.core.schedule import Scheduler, SchedulerConfig
from handlers.core.tasks import Effects
from webhooks.appkeys import EFFECTS, SCHEDULER, SCHEDULER_CONFIG

log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 10.0


def default_config(registry: Effects) -> SchedulerConfig:
    """`handlers.jobs.SCHEDULE`, each job run with this app's effects registry."""

    async def runner(job: str, now: datetime) -> object:
        return await jobs.run_job(job, now, registry)

    return SchedulerConfig(schedule=jobs.SCHEDULE, runner=runner)


async def embedded_scheduler(app: web.Application) -> AsyncIterator[None]:
    """`cleanup_ctx` resource: the in-process scheduler (`create_app` installs it only when Redis is
    in-process, memory://; with real Redis the `memberbot worker` process runs the jobs). Startup never
    waits for a job; at shutdown a running job gets `STOP_GRACE_SECONDS` to finish, then is cancelled.
    """
    scheduler = Scheduler(app.get(SCHEDULER_CONFIG) or default_config(app[EFFECTS]))
    app[SCHEDULER] = scheduler
    task = asyncio.create_task(scheduler.run(), name="embedded-scheduler")
    log.info("embedded scheduler started", extra={"jobs": [e.job for e in scheduler.config.schedule]})
    yield
    scheduler.stop()
    done, _ = await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
    if not done:
        log.warning("embedded scheduler: a job outlived the shutdown grace period and was cancelled")
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        log.exception("embedded scheduler stopped with an error")
