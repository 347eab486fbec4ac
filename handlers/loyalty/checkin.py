"""Daily check-in (签到), make-ups (补签) and the month calendar.

A day is the merchant-local calendar date. At most one check-in per member per day: the account row
is locked first (so a member's check-ins serialize, inside the `memberbot_check_in` function of
migration 0010), and the (member, day) unique key is the lasting guarantee — a concurrent duplicate
becomes "already checked in", never a second posting. The `Checkin` row and its ledger posting
commit in one transaction.

Streaks: `Checkin.streak` is the length of the run of consecutive checked days (make-ups included)
ending at that day. A check-in continues yesterday's stored streak. A make-up fills a gap, so it
rewrites the stored streak of the run that follows it (up to today); the points already paid for
those later days stay as they were — streak rewards are paid when the check-in happens, for the
streak it makes at that moment, never retroactively. A make-up day itself earns no points: it only
costs `makeup_cost_points` and keeps the streak alive for the next check-in. The monthly make-up
limit counts made-up days per calendar month of the day made up (deterministic, and what the
calendar of that month shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core import queries
from handlers.core.errors import Conflict, ErrorCode, NotFound, ValidationError
from handlers.core.tasks import Effects
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger
from handlers.members import blocking
from handlers.members import lookup as members
from handlers.notices.delivery import tell
from handlers.rules.calendar import local_day, next_month
from handlers.rules.checkin import (
    CheckinPolicy,
    makeup_allowed,
    month_calendar,
    points_table,
    streak_rewards,
)
from handlers.rules.expiry import expiry_date
from models.checkin import Checkin
from models.merchant import Merchant
from models.points import PointsKind

MAX_REWARD_LOOKAHEAD = 366


@dataclass(frozen=True, slots=True)
class NextReward:
    """The next streak bonus: `days` more check-ins (counting the next one) reach `streak`."""

    days: int
    streak: int
    points: int


@dataclass(frozen=True, slots=True)
class CheckinResult:
    day: date
    already: bool  # True: the member had already checked in that day; nothing was posted
    streak: int
    points: int  # points this check-in earned (0 when `already`)
    bonus: int  # the streak-reward part of `points`
    balance: int
    next_reward: NextReward | None


@dataclass(frozen=True, slots=True)
class MakeupResult:
    day: date
    streak: int  # the streak ending at the made-up day
    current_streak: int
    cost: int
    balance: int


@dataclass(frozen=True, slots=True)
class DayView:
    day: date
    checked: bool
    makeup: bool
    today: bool
    future: bool
    can_make_up: bool


@dataclass(frozen=True, slots=True)
class CalendarView:
    year: int
    month: int
    days: list[DayView]
    streak: int  # the live streak: through today, or through yesterday if today is not checked yet
    checked_today: bool
    next_reward: NextReward | None
    makeup_cost: int
    makeups_left: int | None  # this month; None: no monthly limit


def next_reward(policy: CheckinPolicy, streak: int) -> NextReward | None:
    """The first streak reward after a live streak of `streak` days, or None if there is none ahead."""
    if not policy.streak_rewards:
        return None
    horizon = policy.cycle_days or max(policy.streak_rewards)
    for ahead in range(1, min(horizon, MAX_REWARD_LOOKAHEAD) + 1):
        bonus = streak_rewards(streak + ahead, policy.streak_rewards, policy.cycle_days)
        if bonus:
            return NextReward(ahead, streak + ahead, bonus)
    return None


async def check_in(merchant: Merchant, member_id: int, *, now: datetime, effects: Effects) -> CheckinResult:
    """Check the member in for today (merchant-local); a second call the same day changes nothing."""
    result = await _check_in(merchant, now, effects, member_id=member_id)
    if result is None:
        raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND)
    return result


async def check_in_follower(
    merchant: Merchant, openid: str, *, now: datetime, effects: Effects
) -> CheckinResult | None:
    """`check_in` for the member behind an Official Account openid; None if there is none (yet)."""
    return await _check_in(merchant, now, effects, openid=openid)


_CHECK_IN_CALL = """
SELECT outcome, member_id, streak, points, balance FROM memberbot_check_in(
    :merchant, :member, :openid, :day, :table, :cycle, :daily, :reason, :now, :expires)
"""


async def _check_in(
    merchant: Merchant,
    now: datetime,
    effects: Effects,
    *,
    member_id: int | None = None,
    openid: str | None = None,
) -> CheckinResult | None:
    program = await loyalty_config.program(merchant.id)
    policy = program.checkin
    day = local_day(now, merchant.timezone)
    expires = expiry_date(now, program.expiry, merchant.timezone)
    # One round trip to memberbot_check_in (migration 0010; it posts through the ledger's writer), with
    # the points of each streak handed over as a table: the rules stay in Python.
    table, cycle = points_table(policy)
    row = await queries.fetch_one(
        _CHECK_IN_CALL,
        merchant=merchant.id,
        member=member_id,
        openid=openid,
        day=day,
        table=table,
        cycle=cycle,
        daily=policy.daily_points,
        reason=f"{day.isoformat()} 签到",
        now=now,
        expires=expires,
    )
    if row["outcome"] == "no_member":
        return None
    if row["outcome"] == "blocked":
        raise blocking.MemberBlocked()
    streak, earned = int(row["streak"]), int(row["points"])
    if row["outcome"] == "already":
        return _already(day, streak, int(row["balance"]), policy)
    bonus = streak_rewards(streak, policy.streak_rewards, policy.cycle_days)
    if bonus:  # the chat reply tells of a check-in; a streak reward is news worth a notice too
        await _tell_reward(effects, merchant, int(row["member_id"]), day, streak, earned, int(row["balance"]))
    return CheckinResult(day, False, streak, earned, bonus, int(row["balance"]), next_reward(policy, streak))


async def _tell_reward(
    effects: Effects, merchant: Merchant, member_id: int, day: date, streak: int, earned: int, balance: int
) -> None:
    await tell(
        effects,
        "points_credited",
        merchant_id=merchant.id,
        member_id=member_id,
        event_key=f"checkin:{day.isoformat()}",
        context={"reason": f"连续签到 {streak} 天奖励", "points": earned, "balance": balance},
    )


def _already(day: date, streak: int, balance: int, policy: CheckinPolicy) -> CheckinResult:
    return CheckinResult(day, True, streak, 0, 0, balance, next_reward(policy, streak))


async def _balance(merchant_id: int, member_id: int) -> int:
    async with in_transaction():
        return (await ledger.lock_account(merchant_id, member_id)).balance


async def _streak_through(member_id: int, day: date) -> int:
    row = await Checkin.get_or_none(member_id=member_id, day=day)
    return row.streak if row is not None else 0


async def make_up(merchant: Merchant, member_id: int, day: date, *, now: datetime) -> MakeupResult:
    """补签 a missed past day for `makeup_cost_points`; refused with the reason, changing nothing."""
    policy = (await loyalty_config.program(merchant.id)).checkin
    today = local_day(now, merchant.timezone)
    member = await members.resolve(merchant, member_id=member_id)
    blocking.ensure_active(member)
    joined = local_day(member.registered_at, merchant.timezone)
    try:
        async with in_transaction():
            account = await ledger.lock_account(merchant.id, member_id)
            used = await _makeups_in_month(member_id, day)
            recent = await _checked_days(member_id, day, day)
            _refuse_makeup(policy, day, today, joined, used, checked=bool(recent))
            if not makeup_allowed(
                day,
                today,
                recent,
                policy.makeup_max_days_back,
                used_this_month=used,
                max_per_month=policy.makeup_max_per_month,
                not_before=joined,
            ):
                raise ValidationError("这一天不能补签", field="day")
            streak = await _streak_through(member_id, day - timedelta(days=1)) + 1
            await Checkin.create(
                merchant_id=merchant.id, member_id=member_id, day=day, makeup=True, streak=streak, points=0
            )
            balance = account.balance
            if policy.makeup_cost_points:
                balance = await _charge(merchant.id, member_id, policy.makeup_cost_points, day, now)
            await _restreak_after(member_id, day, streak, today)
    except IntegrityError:
        raise Conflict("这一天已经签到过了", field="day") from None
    current, _ = await live_streak(member_id, today)
    return MakeupResult(day, streak, current, policy.makeup_cost_points, balance)


def _refuse_makeup(
    policy: CheckinPolicy, day: date, today: date, joined: date, used: int, *, checked: bool
) -> None:
    """Raise the reason a make-up of `day` is not allowed (checked in the order a member understands)."""
    if day >= today:
        raise ValidationError("只能补签今天之前漏签的日期", field="day")
    if policy.makeup_max_days_back == 0:
        raise ValidationError("本店暂未开放补签", field="day")
    if day < today - timedelta(days=policy.makeup_max_days_back):
        raise ValidationError(f"只能补签最近 {policy.makeup_max_days_back} 天内漏签的日期", field="day")
    if day < joined:
        raise ValidationError("入会之前的日期不能补签", field="day")
    if checked:
        raise Conflict("这一天已经签到过了", field="day")
    if policy.makeup_max_per_month is not None and used >= policy.makeup_max_per_month:
        raise Conflict(f"本月补签次数已用完（每月 {policy.makeup_max_per_month} 次）", field="day")


async def _charge(merchant_id: int, member_id: int, cost: int, day: date, now: datetime) -> int:
    try:
        posted = await ledger.debit(
            merchant_id,
            member_id,
            cost,
            PointsKind.SPEND_MAKEUP,
            key=f"makeup:{member_id}:{day.isoformat()}",
            now=now,
            reference=day.isoformat(),
            actor="member",
            reason=f"补签 {day.isoformat()}",
        )
    except ledger.NotEnoughPoints:
        available = await _balance(merchant_id, member_id)
        raise ledger.NotEnoughPoints(
            f"补签需要 {cost} 积分，您当前可用 {max(available, 0)} 积分", field="day"
        ) from None
    return posted.balance_after


async def _restreak_after(member_id: int, day: date, streak: int, today: date) -> None:
    """Renumber the run of checked days that directly follows a made-up `day`."""
    later = await Checkin.filter(member_id=member_id, day__gt=day, day__lte=today).order_by("day")
    expected, run = day + timedelta(days=1), streak
    for row in later:
        if row.day != expected:
            break
        run += 1
        if row.streak != run:
            row.streak = run
            await row.save(update_fields=["streak"])
        expected += timedelta(days=1)


async def _checked_days(member_id: int, first: date, last: date) -> list[date]:
    rows = await Checkin.filter(member_id=member_id, day__gte=first, day__lte=last)
    return [row.day for row in rows]


async def _makeups_in_month(member_id: int, day: date) -> int:
    """Made-up days in the calendar month of `day` (the monthly limit counts days, not actions)."""
    first = day.replace(day=1)
    return await Checkin.filter(
        member_id=member_id, makeup=True, day__gte=first, day__lt=next_month(first)
    ).count()


async def live_streak(member_id: int, today: date) -> tuple[int, bool]:
    """(the live streak, whether today is checked): a streak stays alive until a day is missed."""
    rows = await Checkin.filter(member_id=member_id, day__gte=today - timedelta(days=1), day__lte=today)
    by_day = {row.day: row for row in rows}
    if today in by_day:
        return by_day[today].streak, True
    yesterday = by_day.get(today - timedelta(days=1))
    return (yesterday.streak if yesterday is not None else 0), False


async def calendar(
    merchant: Merchant, member_id: int, year: int, month: int, *, now: datetime
) -> CalendarView:
    """The month as the member sees it: checked and made-up days, today, what can still be made up."""
    if not (2000 <= year <= 2999 and 1 <= month <= 12):
        raise ValidationError("月份应为 YYYY-MM，如 2024-05", field="month")
    policy = (await loyalty_config.program(merchant.id)).checkin
    today = local_day(now, merchant.timezone)
    member = await members.resolve(merchant, member_id=member_id)
    first = date(year, month, 1)
    rows = await Checkin.filter(member_id=member_id, day__gte=first, day__lt=next_month(first))
    makeups = {row.day for row in rows if row.makeup}
    used = await _makeups_in_month(member_id, first)
    grid = month_calendar(
        year,
        month,
        [row.day for row in rows],
        today,
        policy=policy,
        makeups_used_this_month=used,
        not_before=local_day(member.registered_at, merchant.timezone),
    )
    streak, checked_today = await live_streak(member_id, today)
    limit = policy.makeup_max_per_month
    return CalendarView(
        year=year,
        month=month,
        days=[
            DayView(d.day, d.checked, d.day in makeups, d.is_today, d.is_future, d.can_make_up) for d in grid
        ],
        streak=streak,
        checked_today=checked_today,
        next_reward=next_reward(policy, streak),
        makeup_cost=policy.makeup_cost_points,
        makeups_left=None if limit is None else max(limit - used, 0),
    )
