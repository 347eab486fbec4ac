"""The in-process scheduler: runs jobs by name at wall-clock times of one zone, one at a time.

The loop computes each entry's next due instant, sleeps until the soonest (at most `max_sleep` at a
time, so a clock jump is noticed), runs what is due with `now` = the clock, logs and survives a
failing job, and stops between jobs at shutdown. Jobs select "due and not yet done", so a run missed
while the process was down is caught up by the next one. `handlers.jobs.SCHEDULE` is the timetable;
the arq worker builds its cron jobs from the same entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

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
    """What the scheduler runs (`runner(job, now)` for each due entry); tests replace the clock and
    shorten `max_sleep`."""

    schedule: tuple[Entry, ...]
    runner: Runner
    zone: ZoneInfo = SCHEDULE_TIMEZONE
    clock: Clock = utc_now
    max_sleep: float = 60.0


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
