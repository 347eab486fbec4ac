"""The schedule's timezone, and the embedded scheduler that runs the jobs in `memberbot serve`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers import jobs
from handlers.core.schedule import Entry, SchedulerConfig, next_due
from handlers.jobs import SCHEDULE
from handlers.loyalty import config as loyalty_config
from handlers.till.purchase import PurchaseRequest, record_purchase
from models.points import PointsAccount
from tests.support.factories import EFFECTS, make_member, make_merchant
from webhooks.appkeys import SCHEDULER, SCHEDULER_CONFIG


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("after", "entry", "due"),
    [
        # 00:10 Asia/Shanghai is 16:10 UTC of the day before.
        (utc(2026, 3, 1, 15, 0), Entry("x", hour=0, minute=10), utc(2026, 3, 1, 16, 10)),
        (utc(2026, 3, 1, 16, 10), Entry("x", hour=0, minute=10), utc(2026, 3, 2, 16, 10)),
        (utc(2026, 3, 1, 16, 11), Entry("x", hour=0, minute=10), utc(2026, 3, 2, 16, 10)),
        # 00:30 on 1 January local (still 31 December in UTC): retention at 03:30 local that day.
        (utc(2026, 12, 31, 16, 30), Entry("x", hour=3, minute=30), utc(2026, 12, 31, 19, 30)),
        (utc(2026, 2, 28, 20, 0), Entry("x", hour=3, minute=30), utc(2026, 3, 1, 19, 30)),
        # Hourly at minute 5.
        (utc(2026, 3, 1, 15, 4, 59), Entry("x", minute=5), utc(2026, 3, 1, 15, 5)),
        (utc(2026, 3, 1, 15, 5), Entry("x", minute=5), utc(2026, 3, 1, 16, 5)),
        # Several times an hour.
        (utc(2026, 3, 1, 15, 5), Entry("x", minute=frozenset({5, 35})), utc(2026, 3, 1, 15, 35)),
        (utc(2026, 3, 1, 15, 40), Entry("x", minute=frozenset({5, 35})), utc(2026, 3, 1, 16, 5)),
    ],
)
def test_next_due_is_wall_clock_time_in_asia_shanghai(after: datetime, entry: Entry, due: datetime) -> None:
    assert next_due(after, entry) == due


def test_schedule_names_every_job_with_its_time() -> None:
    times = {(e.job, e.hour, e.minute) for e in SCHEDULE}
    assert times == {
        ("points_maintenance", None, 5),
        ("tier_reviews", 0, 10),
        ("birthday_gifts", None, 0),
        ("retention", 3, 30),
        ("tag_recompute", 2, 50),
        ("mall_pickup_expiry", None, 15),
        ("coupon_expiry", None, 20),
        ("coupon_reminders", None, 25),
        ("points_reminders", None, 35),
        ("pickup_reminders", None, 45),
        ("tier_warnings", 1, 40),
        ("expire_groups", None, frozenset({7, 17, 27, 37, 47, 57})),
        ("campaigns", None, frozenset(range(60))),
        ("effects_sweep", None, frozenset(range(60))),
        ("analytics_refresh", None, frozenset(range(60))),
        ("member_snapshots", None, frozenset({3, 13, 23, 33, 43, 53})),
    }


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def wait_for_runs(app: Any, count: int) -> list[tuple[str, datetime, bool]]:
    for _ in range(500):
        runs = app[SCHEDULER].runs
        if len(runs) >= count:
            return list(runs)
        await asyncio.sleep(0.01)
    raise AssertionError(f"scheduler ran {app[SCHEDULER].runs}, expected {count} runs")


async def test_embedded_scheduler_runs_a_due_job_and_stops_cleanly(
    aiohttp_client: Any, make_app: Any
) -> None:
    start = utc(2026, 12, 1, 3, 4, 50)  # 11:04:50 Shanghai; points maintenance is due at 11:05
    clock = FakeClock(start)
    app = make_app(redis_url="memory://")
    daily = tuple(
        entry
        for entry in SCHEDULE
        if entry.job not in ("effects_sweep", "campaigns", "analytics_refresh", "member_snapshots")
    )  # every minute: not this test's
    app[SCHEDULER_CONFIG] = SchedulerConfig(
        schedule=daily, runner=lambda job, now: jobs.run_job(job, now, EFFECTS), clock=clock, max_sleep=0.01
    )
    client = await aiohttp_client(app)
    merchant = await make_merchant()
    await loyalty_config.save_program(merchant.id, {"pending_days": 1, "registration_bonus": 0}, actor="t")
    member = await make_member(merchant)
    bought = start - timedelta(days=2)
    await record_purchase(
        merchant, None, PurchaseRequest("p", member.id, 10_000), now=bought, effects=EFFECTS
    )
    await asyncio.sleep(0.05)
    assert not app[SCHEDULER].runs  # nothing due before 11:05
    clock.now = start + timedelta(seconds=11)
    assert await wait_for_runs(app, 1) == [("points_maintenance", clock.now, True)]
    assert (await PointsAccount.get(member_id=member.id)).balance == 100
    await client.close()
    assert app[SCHEDULER].stopped.is_set()


async def test_a_failing_job_is_logged_and_the_loop_goes_on(aiohttp_client: Any, make_app: Any) -> None:
    start = utc(2026, 12, 1, 16, 9, 59)  # 00:09:59 Shanghai
    clock = FakeClock(start)
    ran: list[str] = []

    async def runner(job: str, now: datetime) -> None:
        ran.append(job)
        if job == "boom":
            raise RuntimeError("job broke")

    schedule = (Entry("boom", hour=0, minute=10), Entry("fine", hour=0, minute=10))
    app = make_app(redis_url="memory://")
    app[SCHEDULER_CONFIG] = SchedulerConfig(schedule=schedule, clock=clock, max_sleep=0.01, runner=runner)
    client = await aiohttp_client(app)
    clock.now = start + timedelta(seconds=2)
    assert await wait_for_runs(app, 2) == [("boom", clock.now, False), ("fine", clock.now, True)]
    clock.now += timedelta(days=1)  # the next day both are due again: the failure did not stop the loop
    assert [job for job, _, _ in await wait_for_runs(app, 4)] == ["boom", "fine", "boom", "fine"]
    assert (await client.get("/healthz")).status == 200
    await client.close()


async def test_not_started_with_real_redis(aiohttp_client: Any, make_app: Any) -> None:
    # With real Redis the worker runs the jobs; the server must not (the client never connects here).
    app = make_app(redis_url="redis://127.0.0.1:9/0")
    client = await aiohttp_client(app)
    assert SCHEDULER not in app
    await client.close()
