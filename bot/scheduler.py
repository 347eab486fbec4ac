"""The job schedule, and the embedded scheduler that runs it in-process when REDIS_URL=memory://.

`SCHEDULE` is the one timetable: the arq worker (`bot.worker`) builds its cron jobs from it, and in
the single-process mode (`make run`: embedded PostgreSQL + in-process Redis, no worker)
`embedded_scheduler`, a `cleanup_ctx` resource, runs the same jobs on the same times. Times are
wall-clock times in `SCHEDULE_TIMEZONE`, set explicitly (never the machine's zone).

The loop computes each job's next due instant, sleeps until the soonest (at most `max_sleep` at a
time, so a clock jump is noticed), runs what is due with `now` = the clock, logs and survives a
failing job, and stops between jobs at shutdown. Jobs select "due and not yet done", so a run missed
while the process was down is caught up by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web

from handlers import jobs

log = logging.getLogger(__name__)
SCHEDULE_TIMEZONE = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True, slots=True)
class Entry:
    """A job due every day at `hour:minute`, or every hour at `minute` when `hour` is None; `minute` may
    be a set of minutes (several runs an hour)."""

    job: str
    minute: int | frozenset[int]
    hour: int | None = None

    @property
    def minutes(self) -> tuple[int, ...]:
        return (self.minute,) if isinstance(self.minute, int) else tuple(sorted(self.minute))


SCHEDULE: tuple[Entry, ...] = (
    Entry("points_maintenance", minute=5),
    Entry("tier_reviews", hour=0, minute=10),
    Entry("birthday_gifts", hour=0, minute=10),
    Entry("retention", hour=3, minute=30),
    Entry("mall_pickup_expiry", minute=15),
    Entry("coupon_expiry", minute=20),
    # A group deal that fails to fill refunds its members within ten minutes of its deadline.
    Entry("expire_groups", minute=frozenset(range(7, 60, 10))),
)


def next_due(after: datetime, entry: Entry, zone: ZoneInfo = SCHEDULE_TIMEZONE) -> datetime:
    """The first instant strictly after `after` at which `entry` is due, in UTC."""
    return min(_next_at(after, entry.hour, minute, zone) for minute in entry.minutes)


def _next_at(after: datetime, hour: int | None, minute: int, zone: ZoneInfo) -> datetime:
    local = after.astimezone(zone)
    candidate = local.replace(minute=minute, second=0, microsecond=0)
    step = timedelta(hours=1)
    if hour is not None:
        candidate = candidate.replace(hour=hour)
        step = timedelta(days=1)
    while candidate <= local:
        candidate = (candidate.replace(tzinfo=None) + step).replace(tzinfo=zone)
    return candidate.astimezone(UTC)


Clock = Callable[[], datetime]
Runner = Callable[[str, datetime], Awaitable[object]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SchedulerConfig:
    """What the embedded scheduler runs; tests replace the clock and shorten `max_sleep`."""

    schedule: tuple[Entry, ...] = SCHEDULE
    zone: ZoneInfo = SCHEDULE_TIMEZONE
    clock: Clock = utc_now
    max_sleep: float = 60.0
    runner: Runner = jobs.run_job


@dataclass
class Scheduler:
    config: SchedulerConfig
    # The latest runs as (job, now, succeeded), for tests and debugging; the log has them all.
    runs: deque[tuple[str, datetime, bool]] = field(default_factory=lambda: deque(maxlen=100))
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            self.stopped.set()

    async def _loop(self) -> None:
        cfg = self.config
        due = {entry: next_due(cfg.clock(), entry, cfg.zone) for entry in cfg.schedule}
        while not self._stopping:
            now = cfg.clock()
            for entry in [e for e in cfg.schedule if due[e] <= now]:
                if self._stopping:
                    return
                await self._run_one(entry.job, now)
                due[entry] = next_due(now, entry, cfg.zone)
            delay = (min(due.values()) - cfg.clock()).total_seconds() if due else cfg.max_sleep
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(max(delay, 0.0), cfg.max_sleep))

    async def _run_one(self, job: str, now: datetime) -> None:
        try:
            await self.config.runner(job, now)
        except Exception:  # the loop goes on to the next job
            log.exception("scheduled job failed", extra={"job": job})
            self.runs.append((job, now, False))
        else:
            self.runs.append((job, now, True))

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()


SCHEDULER_CONFIG: web.AppKey[SchedulerConfig] = web.AppKey("scheduler_config", SchedulerConfig)
SCHEDULER: web.AppKey[Scheduler] = web.AppKey("scheduler", Scheduler)
STOP_GRACE_SECONDS = 10.0


async def embedded_scheduler(app: web.Application) -> AsyncIterator[None]:
    """`cleanup_ctx` resource: the in-process scheduler, only when Redis is in-process (memory://).

    With real Redis the `memberbot worker` process runs the jobs, so this does nothing. Startup never
    waits for a job; at shutdown a running job gets `STOP_GRACE_SECONDS` to finish, then is cancelled.
    """
    from bot.app import SETTINGS

    if not app[SETTINGS].redis_url.startswith("memory://"):
        yield
        return
    scheduler = Scheduler(app.get(SCHEDULER_CONFIG) or SchedulerConfig())
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
