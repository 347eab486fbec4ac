"""Birthdays: at 09:00 merchant-local time, a member born that day gets their tier's birthday gift —
points and/or coupons — and a greeting, once a year.

The job runs hourly and selects what is due and not yet done: every birthday of the last
`CATCH_UP_DAYS` days whose 09:00 has passed (so a worker that was down catches up), for members
registered by then. A 29 February birthday is celebrated on 28 February in other years. The points
(`birthday:<member>:<year>`), each coupon (`birthday:<member>:<year>:<template>`) and the greeting
(event `birthday:<year>`) are keyed by the year, so a rerun, a second worker or a restart the same day
gives nothing more. Members without a birthday, erased and blocked ones get nothing.
"""

from __future__ import annotations

import calendar
import logging
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from tortoise.transactions import in_transaction

from handlers.core import queries
from handlers.core.tasks import Effects, Queued
from handlers.coupons import redeem as coupons
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger, tiers
from handlers.notices.delivery import queue_notice
from handlers.rules.calendar import due_birthday, local_day
from handlers.rules.expiry import expiry_date
from models.member import Member
from models.merchant import Merchant
from models.points import PointsKind

log = logging.getLogger(__name__)
BIRTHDAY_HOUR = 9
CATCH_UP_DAYS = 7

_DUE_SQL = """
SELECT id FROM member
 WHERE merchant_id = :merchant AND birthday IS NOT NULL AND anonymized_at IS NULL AND blocked_at IS NULL
   AND to_char(birthday, 'MM-DD') = ANY(:days)
 ORDER BY id
"""


def celebrated_through(now: datetime, tz: str) -> date:
    """The last day whose birthdays are due at `now`: today once it is 09:00 there, else yesterday."""
    local = now.astimezone(ZoneInfo(tz))
    return local.date() if local.hour >= BIRTHDAY_HOUR else local.date() - timedelta(days=1)


def calendar_days(last: date, days: int) -> list[str]:
    """The MM-DD of birthdays celebrated on `last` and the days before it (29 February is celebrated
    on 28 February in years without one)."""
    found: set[str] = set()
    for back in range(days):
        day = last - timedelta(days=back)
        found.add(day.strftime("%m-%d"))
        if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
            found.add("02-29")
    return sorted(found)


async def birthday_gifts(now: datetime, effects: Effects) -> dict[str, int]:
    celebrated = 0
    for merchant in await Merchant.all().order_by("id"):
        celebrated += await _merchant_birthdays(merchant, now, effects)
    return {"celebrated": celebrated}


async def _merchant_birthdays(merchant: Merchant, now: datetime, effects: Effects) -> int:
    last = celebrated_through(now, merchant.timezone)
    rows = await queries.fetch_rows(_DUE_SQL, merchant=merchant.id, days=calendar_days(last, CATCH_UP_DAYS))
    celebrated = 0
    for row in rows:
        member = await Member.get(id=row["id"])
        assert member.birthday is not None
        day = due_birthday(
            member.birthday, local_day(member.registered_at, merchant.timezone), last, CATCH_UP_DAYS
        )
        if day is None:
            continue
        try:
            celebrated += await celebrate(merchant, member, day.year, now=now, effects=effects)
        except Exception:  # one member's failure must not stop everyone else's birthday
            log.exception("birthday not celebrated", extra={"member_id": member.id})
    return celebrated


async def celebrate(merchant: Merchant, member: Member, year: int, *, now: datetime, effects: Effects) -> int:
    """The member's birthday of `year`: gift and greeting, once (1 the first time, 0 after)."""
    _, ladder = await loyalty_config.current_tiers(merchant.id)
    tier = loyalty_config.tier_by_code(ladder, await tiers.tier_code(merchant.id, member.id))
    program = await loyalty_config.program(merchant.id)
    key = f"birthday:{member.id}:{year}"
    greeting: Queued | None
    async with in_transaction():
        points = tier.benefits.birthday_gift_points
        if points:
            posted = await ledger.credit(
                merchant.id,
                member.id,
                points,
                PointsKind.EARN_PROMOTION,
                key=key,
                now=now,
                expires_at=expiry_date(now, program.expiry, merchant.timezone),
                reason="生日礼遇",
            )
            if posted.replayed:
                return 0
        names = await coupons.gift_coupons(
            merchant, member.id, tier.benefits.birthday_gift_coupon_template_ids, "birthday", key, now
        )
        gift = "、".join([*([f"{points} 积分"] if points else []), *names])
        greeting = await queue_notice(
            effects,
            "birthday_greeting",
            merchant_id=merchant.id,
            member_id=member.id,
            event_key=f"birthday:{year}",
            context={"gift_points": points, "gift_coupons": "、".join(names), "gift": gift or "生日祝福"},
        )
    if greeting is None:
        return 0
    await effects.after_commit(greeting)
    return 1
