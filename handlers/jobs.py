"""The periodic jobs: plain async functions of `now`, run by the arq worker or the embedded scheduler.

Every job selects work that is due at `now` and not yet done (never "today"), and every posting it
makes carries a ledger idempotency key, so a job is safe to run twice and a missed run is caught up
by the next one:

- `points_maintenance`: pending points whose refund window has passed are released (one earn per
  lot, keyed by the purchase), then every lapsed lot expires (one `expire` posting per member).
- `tier_reviews`: downgrade reviews that are due (`MemberTier.last_review_on` records the last one).
- `birthday_gifts`: the tier's birthday gift for birthdays within the last `BIRTHDAY_CATCH_UP_DAYS`
  merchant-local days, once per member and year (key `birthday:<member>:<year>`; a gift already
  given is never re-posted, even if the tier's gift changed since). A 29 February birthday is
  celebrated on 28 February in other years; a member who registered after the day gets nothing.
- `retention`: unfollowed members' profiles past the merchant's grace period are erased.
- `effects_sweep` (every minute): durable effects that are due — retries after their backoff, tasks
  whose process died — run (`handlers.core.tasks`; the arq worker fans them out as `run_task` jobs).

`run_job(name, now)` runs one by name and logs one JSON line with its counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from handlers import effects
from handlers.core.schedule import Entry
from handlers.coupons import redeem as coupons
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger, tiers
from handlers.mall import groups
from handlers.mall.orders import expire_pickups
from handlers.members import retention as retention_policy
from handlers.rules.calendar import due_birthday, local_day
from handlers.rules.expiry import expiry_date
from models.member import Member
from models.merchant import Merchant
from models.points import PointsKind, PointsTransaction

log = logging.getLogger(__name__)
BIRTHDAY_CATCH_UP_DAYS = 7

Counts = dict[str, int]
Job = Callable[[datetime], Awaitable[Counts]]


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


async def birthday_gifts(now: datetime) -> Counts:
    now = _aware(now)
    granted = 0
    for merchant in await Merchant.all().order_by("id"):
        granted += await _merchant_birthdays(merchant, now)
    return {"granted": granted}


async def _merchant_birthdays(merchant: Merchant, now: datetime) -> int:
    today = local_day(now, merchant.timezone)
    _, ladder = await loyalty_config.current_tiers(merchant.id)
    program = await loyalty_config.program(merchant.id)
    granted = 0
    members = Member.filter(merchant_id=merchant.id, birthday__isnull=False, anonymized_at__isnull=True)
    for member in await members.order_by("id"):
        assert member.birthday is not None
        registered = local_day(member.registered_at, merchant.timezone)
        day = due_birthday(member.birthday, registered, today, BIRTHDAY_CATCH_UP_DAYS)
        if day is None:
            continue
        key = f"birthday:{member.id}:{day.year}"
        if await PointsTransaction.exists(merchant_id=merchant.id, idempotency_key=key):
            continue
        tier = loyalty_config.tier_by_code(ladder, await tiers.tier_code(merchant.id, member.id))
        gift = tier.benefits.birthday_gift_points
        if not gift:
            continue
        try:
            posted = await ledger.credit(
                merchant.id,
                member.id,
                gift,
                PointsKind.EARN_PROMOTION,
                key=key,
                now=now,
                expires_at=expiry_date(now, program.expiry, merchant.timezone),
                reason="生日礼遇",
            )
        except Exception:  # one member's failure must not stop everyone else's gift
            log.exception("birthday gift failed", extra={"member_id": member.id})
            continue
        granted += not posted.replayed
    return granted


SCHEDULE: tuple[Entry, ...] = (
    Entry("points_maintenance", minute=5),
    Entry("tier_reviews", hour=0, minute=10),
    Entry("birthday_gifts", hour=0, minute=10),
    Entry("retention", hour=3, minute=30),
    Entry("mall_pickup_expiry", minute=15),
    Entry("coupon_expiry", minute=20),
    # A group deal that fails to fill refunds its members within ten minutes of its deadline.
    Entry("expire_groups", minute=frozenset(range(7, 60, 10))),
    Entry("effects_sweep", minute=frozenset(range(60))),
)


async def effects_sweep(now: datetime) -> Counts:
    """Run the durable effects that are due: retries after a backoff, and tasks whose process died."""
    return await effects.build().run_due(_aware(now))


JOBS: dict[str, Job] = {
    "effects_sweep": effects_sweep,
    "points_maintenance": points_maintenance,
    "tier_reviews": tier_reviews,
    "birthday_gifts": birthday_gifts,
    "retention": retention,
    "mall_pickup_expiry": expire_pickups,
    "coupon_expiry": coupons.expiry_job,
    "expire_groups": groups.expire_groups,
}


async def run_job(name: str, now: datetime) -> Counts:
    """Run the job called `name` at `now`; one JSON log line with its counts (or the failure)."""
    job = JOBS.get(name)
    if job is None:
        raise ValueError(f"unknown job {name!r}; known: {', '.join(JOBS)}")
    started = time.perf_counter()
    try:
        counts = await job(now)
    except Exception:
        log.exception("job failed", extra={"job": name, "job_now": now.isoformat()})
        raise
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    log.info("job done", extra={"job": name, "job_now": now.isoformat(), "counts": counts, "ms": elapsed_ms})
    return counts
