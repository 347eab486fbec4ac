"""Daily check-in: the merchant-local day, streaks, streak rewards, the month calendar and make-ups.

A "day" is always a merchant-local calendar date. Make-up days count toward streaks like any other
checked day. With `cycle_days` set, streak rewards repeat: with a 7-day cycle, day 14 earns the
day-7 reward and day 8 the day-1 reward.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from types import MappingProxyType
from typing import Any

from handlers.rules import _parse as p
from handlers.rules.errors import RuleError

__all__ = [
    "CalendarDay",
    "CheckinPolicy",
    "RuleError",
    "checkin_points",
    "checkin_policy_to_dict",
    "makeup_allowed",
    "month_calendar",
    "streak_after",
    "streak_rewards",
    "validate_checkin_policy",
]

MAX_POINTS = 1_000_000
MAX_STREAK_DAY = 3660
_DAY_KEY = re.compile(r"[1-9]\d{0,3}")


def _no_rewards() -> Mapping[int, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CheckinPolicy:
    """`streak_rewards` maps a streak day (1-based) to bonus points; `makeup_max_per_month=None`: no limit."""

    daily_points: int
    streak_rewards: Mapping[int, int] = field(default_factory=_no_rewards)
    cycle_days: int | None = None
    makeup_cost_points: int = 0
    makeup_max_days_back: int = 0
    makeup_max_per_month: int | None = None


@dataclass(frozen=True, slots=True)
class CalendarDay:
    day: date
    checked: bool
    is_today: bool
    is_future: bool
    can_make_up: bool


def streak_after(checked_days: Iterable[date], day: date) -> int:
    """Length of the run of consecutive checked days ending at `day`, counting `day` as checked."""
    checked = set(checked_days)
    streak = 1
    cursor = day - timedelta(days=1)
    while cursor in checked:
        streak += 1
        cursor -= timedelta(days=1)
    return streak


def streak_rewards(streak: int, rewards: Mapping[int, int], cycle_days: int | None = None) -> int:
    """Bonus points for reaching `streak` consecutive days (0 when that day has no reward)."""
    if streak < 1:
        return 0
    position = streak if cycle_days is None else (streak - 1) % cycle_days + 1
    return rewards.get(position, 0)


def checkin_points(policy: CheckinPolicy, streak: int) -> int:
    """Daily points plus the streak reward for the check-in that makes the streak `streak` long."""
    return policy.daily_points + streak_rewards(streak, policy.streak_rewards, policy.cycle_days)


def points_table(policy: CheckinPolicy) -> tuple[list[int], int]:
    """`checkin_points` as data, for code that cannot call Python (the PostgreSQL check-in function):
    `(table, cycle)` such that the points of streak `s` are `table[(s - 1) % cycle]` when `cycle`, else
    `table[s - 1]` while `s <= len(table)`, else `policy.daily_points`."""
    if policy.cycle_days:
        return [checkin_points(policy, s) for s in range(1, policy.cycle_days + 1)], policy.cycle_days
    return [checkin_points(policy, s) for s in range(1, max(policy.streak_rewards, default=0) + 1)], 0


def makeup_allowed(
    day: date,
    today: date,
    checked_days: Iterable[date],
    max_days_back: int,
    *,
    used_this_month: int = 0,
    max_per_month: int | None = None,
    not_before: date | None = None,
) -> bool:
    """Whether a missed past `day` may be made up today.

    `used_this_month` counts make-ups already done this month; `not_before` is typically the
    member's join date.
    """
    if not (today - timedelta(days=max_days_back) <= day < today):
        return False
    if not_before is not None and day < not_before:
        return False
    if max_per_month is not None and used_this_month >= max_per_month:
        return False
    return day not in set(checked_days)


def month_calendar(
    year: int,
    month: int,
    checked_days: Iterable[date],
    today: date,
    *,
    policy: CheckinPolicy | None = None,
    makeups_used_this_month: int = 0,
    not_before: date | None = None,
) -> list[CalendarDay]:
    """One entry per day of the month; make-ups are offered only when a `policy` allows them."""
    checked = frozenset(checked_days)
    days = [date(year, month, n) for n in range(1, calendar.monthrange(year, month)[1] + 1)]
    return [
        CalendarDay(
            day=day,
            checked=day in checked,
            is_today=day == today,
            is_future=day > today,
            can_make_up=policy is not None
            and makeup_allowed(
                day,
                today,
                checked,
                policy.makeup_max_days_back,
                used_this_month=makeups_used_this_month,
                max_per_month=policy.makeup_max_per_month,
                not_before=not_before,
            ),
        )
        for day in days
    ]


def validate_checkin_policy(raw: object) -> CheckinPolicy:
    """A `CheckinPolicy` from JSON-like data; raises `RuleError` naming the first invalid field."""
    top = p.obj(
        raw,
        "",
        required=("daily_points",),
        optional=(
            "streak_rewards",
            "cycle_days",
            "makeup_cost_points",
            "makeup_max_days_back",
            "makeup_max_per_month",
        ),
    )
    cycle = p.opt_integer(top.get("cycle_days"), "cycle_days", lo=1, hi=366)
    return CheckinPolicy(
        daily_points=p.integer(top["daily_points"], "daily_points", lo=0, hi=MAX_POINTS),
        streak_rewards=_rewards(top.get("streak_rewards", {}), cycle),
        cycle_days=cycle,
        makeup_cost_points=p.integer(
            top.get("makeup_cost_points", 0), "makeup_cost_points", lo=0, hi=MAX_POINTS
        ),
        makeup_max_days_back=p.integer(
            top.get("makeup_max_days_back", 0), "makeup_max_days_back", lo=0, hi=366
        ),
        makeup_max_per_month=p.opt_integer(
            top.get("makeup_max_per_month"), "makeup_max_per_month", lo=0, hi=31
        ),
    )


def checkin_policy_to_dict(policy: CheckinPolicy) -> dict[str, Any]:
    """JSON-ready data (streak days as string keys) that `validate_checkin_policy` reads back."""
    return {
        "daily_points": policy.daily_points,
        "streak_rewards": {str(day): points for day, points in sorted(policy.streak_rewards.items())},
        "cycle_days": policy.cycle_days,
        "makeup_cost_points": policy.makeup_cost_points,
        "makeup_max_days_back": policy.makeup_max_days_back,
        "makeup_max_per_month": policy.makeup_max_per_month,
    }


def _rewards(raw: object, cycle: int | None) -> Mapping[int, int]:
    if not isinstance(raw, Mapping):
        raise RuleError("streak_rewards", '应为对象，如 {"7": 50}')
    last_day = cycle if cycle is not None else MAX_STREAK_DAY
    rewards: dict[int, int] = {}
    for key, value in raw.items():
        path = p.join("streak_rewards", str(key))
        day = _streak_day(key, path)
        if day > last_day:
            raise RuleError(path, f"连续天数不能超过周期 {last_day} 天")
        if day in rewards:
            raise RuleError(path, "连续天数重复")
        rewards[day] = p.integer(value, path, lo=1, hi=MAX_POINTS)
    return MappingProxyType(dict(sorted(rewards.items())))


def _streak_day(key: object, path: str) -> int:
    if isinstance(key, int) and not isinstance(key, bool) and key >= 1:
        return key
    if isinstance(key, str) and _DAY_KEY.fullmatch(key):
        return int(key)
    raise RuleError(path, "连续天数应为正整数")
