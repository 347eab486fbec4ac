"""The periodic jobs: plain async functions of `now`, run by the arq worker or the embedded scheduler.

Every job selects work that is due at `now` and not yet done (never "today"), and every posting it
makes carries a ledger idempotency key, so a job is safe to run twice and a missed run is caught up
by the next one:

- `points_maintenance`: pending points whose refund window has passed are released (one earn per
  lot, keyed by the purchase), then every lapsed lot expires (one `expire` posting per member).
- `tier_reviews`: downgrade reviews that are due (`MemberTier.last_review_on` records the last one).
- `birthday_gifts` (hourly): at 09:00 merchant-local, the tier's birthday gift (points, coupons) and
  a greeting, once per member and year (`handlers.birthdays`).
- `coupon_reminders` (hourly): a notice for each unused coupon that lapses within three days, once
  per coupon (`handlers.notices.reminders`).
- `points_reminders` (hourly): a notice for each batch of points lapsing within 30 merchant-local
  days (the member's lots lapsing on one date), once per member and date (`handlers.notices.reminders`).
- `pickup_reminders` (hourly): a notice for each mall pick-up whose deadline is tomorrow,
  merchant-local, once per order (`handlers.notices.reminders`).
- `tier_warnings` (daily, after the reviews): a notice for each member whose next downgrade review is
  within their tier's `warn_days` and who would not keep the tier at it, once per member and review
  (`handlers.loyalty.tier_warnings`).
- `tag_recompute` (daily): every automatic tag of every merchant is brought in line with its rule
  (`handlers.tags.recompute`; one set-based statement per tag).
- `retention`: unfollowed members' profiles past the merchant's grace period are erased.
- `analytics_refresh` (every minute): the changes queued since the last run are added to the
  analyses' rollups; `member_snapshots` (every ten minutes): the members per registration month, store,
  tier, gender and age band are counted again (`handlers.analytics.refresh`).
- `campaigns` (every minute): scheduled campaigns whose time has come start sending; journeys take
  the members whose trigger fell due (`handlers.campaigns.journeys`).
- `effects_sweep` (every minute): durable effects that are due — retries after their backoff, tasks
  whose process died — run (`handlers.core.tasks`; the arq worker fans them out as `run_task` jobs).

`run_job(name, now, effects)` runs one by name, with the process's effects registry (for the effects
a job causes, notices among them), and logs one JSON line with its counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from handlers import birthdays
from handlers.analytics import refresh as analytics
from handlers.campaigns.journeys import campaigns_job
from handlers.core.schedule import Entry
from handlers.core.tasks import Effects
from handlers.coupons import redeem as coupons
from handlers.loyalty import ledger, tier_warnings, tiers
from handlers.mall import groups
from handlers.mall.orders import expire_pickups
from handlers.members import retention as retention_policy
from handlers.notices import reminders
from handlers.tags import recompute as tags

log = logging.getLogger(__name__)

Counts = dict[str, int]
Job = Callable[[datetime, Effects], Awaitable[Counts]]


def _aware(now: datetime) -> datetime:
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now


async def points_maintenance(now: datetime) -> Counts:
    """Release matured pending points first (they may be among what expires), then expire lapsed lots."""
    now = _aware(now)
    released = await ledger.release_pending(now)
    expired = await ledger.expire_lapsed(now)
    return {"released_lots": released, "expired_members": expired}


async def tier_reviews(now: datetime) -> Counts:
    return {"downgraded": await tiers.review_downgrades(_aware(now))}


async def retention(now: datetime) -> Counts:
    return {"erased": await retention_policy.erase_due(_aware(now))}


SCHEDULE: tuple[Entry, ...] = (
    Entry("points_maintenance", minute=5),
    Entry("tier_reviews", hour=0, minute=10),
    # Hourly: each merchant's birthdays are due at 09:00 in its own time zone.
    Entry("birthday_gifts", minute=0),
    Entry("retention", hour=3, minute=30),
    # After the day's tier reviews (00:10): tier rules see today's tiers.
    Entry("tag_recompute", hour=2, minute=50),
    Entry("mall_pickup_expiry", minute=15),
    Entry("coupon_expiry", minute=20),
    Entry("coupon_reminders", minute=25),
    Entry("points_reminders", minute=35),
    Entry("pickup_reminders", minute=45),
    # After the day's reviews (00:10), so a review done today is not warned about.
    Entry("tier_warnings", hour=1, minute=40),
    # A group deal that fails to fill refunds its members within ten minutes of its deadline.
    Entry("expire_groups", minute=frozenset(range(7, 60, 10))),
    Entry("campaigns", minute=frozenset(range(60))),
    Entry("effects_sweep", minute=frozenset(range(60))),
    Entry("analytics_refresh", minute=frozenset(range(60))),
    Entry("member_snapshots", minute=frozenset(range(3, 60, 10))),
)


async def effects_sweep(now: datetime, registry: Effects) -> Counts:
    """Run the durable effects that are due: retries after a backoff, and tasks whose process died."""
    return await registry.run_due(_aware(now))


def _plain(job: Callable[[datetime], Awaitable[Counts]]) -> Job:
    """A job that causes no effects of its own."""

    async def run(now: datetime, registry: Effects) -> Counts:
        return await job(_aware(now))

    run.__name__ = run.__qualname__ = job.__name__
    return run


JOBS: dict[str, Job] = {
    "effects_sweep": effects_sweep,
    "campaigns": campaigns_job,
    "points_maintenance": _plain(points_maintenance),
    "tier_reviews": _plain(tier_reviews),
    "birthday_gifts": birthdays.birthday_gifts,
    "retention": _plain(retention),
    "tag_recompute": _plain(tags.nightly),
    "mall_pickup_expiry": _plain(expire_pickups),
    "coupon_expiry": _plain(coupons.expiry_job),
    "expire_groups": groups.expire_groups,
    "coupon_reminders": reminders.coupons_expiring,
    "points_reminders": reminders.points_expiring,
    "pickup_reminders": reminders.pickups_due,
    "tier_warnings": tier_warnings.downgrade_warnings,
    "analytics_refresh": _plain(analytics.refresh),
    "member_snapshots": _plain(analytics.snapshots),
}


async def run_job(name: str, now: datetime, registry: Effects) -> Counts:
    """Run the job called `name` at `now`; one JSON log line with its counts (or the failure)."""
    job = JOBS.get(name)
    if job is None:
        raise ValueError(f"unknown job {name!r}; known: {', '.join(JOBS)}")
    started = time.perf_counter()
    try:
        counts = await job(_aware(now), registry)
    except Exception:
        log.exception("job failed", extra={"job": name, "job_now": now.isoformat()})
        raise
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    log.info("job done", extra={"job": name, "job_now": now.isoformat(), "counts": counts, "ms": elapsed_ms})
    return counts
