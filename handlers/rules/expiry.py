"""Points lots: which lots a spend draws from, and when newly earned points expire.

`expires_at` is the end of a merchant-local day (23:59:59.999999 local time); a lot is spendable
while ``now < expires_at``. Spending draws from the soonest-expiring lots first; lots that never
expire go last; ties go to the smaller lot id (the older lot).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from handlers.rules import _parse as p
from handlers.rules.calendar import add_months, days_in_month
from handlers.rules.errors import RuleError

__all__ = [
    "ExpiryPolicy",
    "InsufficientPoints",
    "Lot",
    "Never",
    "RollingMonths",
    "RuleError",
    "YearlyClearance",
    "allocate_spend",
    "expiry_date",
    "expiry_policy_to_dict",
    "never",
    "rolling_months",
    "validate_expiry_policy",
    "yearly_clearance",
]

MAX_MONTHS = 120


class InsufficientPoints(ValueError):
    def __init__(self, needed: int, available: int) -> None:
        super().__init__(f"needed {needed} points, {available} available")
        self.needed = needed
        self.available = available


@dataclass(frozen=True, slots=True)
class Lot:
    id: int
    remaining: int
    expires_at: datetime | None

    def __post_init__(self) -> None:
        if self.expires_at is not None and self.expires_at.utcoffset() is None:
            raise ValueError("expires_at must be timezone-aware")


@dataclass(frozen=True, slots=True)
class Never:
    """Points never expire."""


@dataclass(frozen=True, slots=True)
class RollingMonths:
    """Points expire at the end of the local day `months` months after they were earned."""

    months: int

    def __post_init__(self) -> None:
        if not 1 <= self.months <= MAX_MONTHS:
            raise ValueError(f"months must be within 1..{MAX_MONTHS}")


@dataclass(frozen=True, slots=True)
class YearlyClearance:
    """Points expire at the end of the first month/day strictly after the local earn date.

    Feb 29 falls back to Feb 28 in common years.
    """

    month: int
    day: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12 or not 1 <= self.day <= days_in_month(2000, self.month):
            raise ValueError("not a calendar day")

    def on(self, year: int) -> date:
        return date(year, self.month, min(self.day, days_in_month(year, self.month)))


ExpiryPolicy = Never | RollingMonths | YearlyClearance


def never() -> Never:
    return Never()


def rolling_months(months: int) -> RollingMonths:
    return RollingMonths(months)


def yearly_clearance(month: int, day: int) -> YearlyClearance:
    return YearlyClearance(month, day)


def allocate_spend(lots: Iterable[Lot], amount: int, *, now: datetime | None = None) -> list[tuple[int, int]]:
    """(lot_id, take) pairs covering `amount` exactly, soonest-expiring lots first.

    With `now`, lots already expired at that instant are ignored. Raises `InsufficientPoints` and
    allocates nothing when the lots do not cover the amount.
    """
    if amount < 0:
        raise ValueError("amount must be >= 0")
    usable = [lot for lot in lots if _usable(lot, now)]
    available = sum(lot.remaining for lot in usable)
    if available < amount:
        raise InsufficientPoints(amount, available)
    plan: list[tuple[int, int]] = []
    left = amount
    for lot in sorted(usable, key=_spend_order):
        if left == 0:
            break
        take = min(left, lot.remaining)
        plan.append((lot.id, take))
        left -= take
    return plan


def expiry_date(earned_at: datetime, policy: ExpiryPolicy, tz: str) -> datetime | None:
    """When points earned at the aware instant `earned_at` expire, in zone `tz`; None for never."""
    if earned_at.utcoffset() is None:
        raise ValueError("earned_at must be timezone-aware")
    zone = ZoneInfo(tz)
    earned = earned_at.astimezone(zone).date()
    match policy:
        case Never():
            return None
        case RollingMonths(months=months):
            last_day = add_months(earned, months)
        case YearlyClearance():
            last_day = policy.on(earned.year)
            if last_day <= earned:
                last_day = policy.on(earned.year + 1)
    return datetime.combine(last_day, time.max, zone)


def validate_expiry_policy(raw: object) -> ExpiryPolicy:
    """`{"kind": "never"}`, `{"kind": "rolling_months", "months": 12}` or
    `{"kind": "yearly_clearance", "month": 12, "day": 31}`; raises `RuleError` otherwise."""
    kind = p.obj(raw, "", required=("kind",), optional=("months", "month", "day"))["kind"]
    if kind == "never":
        p.obj(raw, "", required=("kind",))
        return Never()
    if kind == "rolling_months":
        top = p.obj(raw, "", required=("kind", "months"))
        return RollingMonths(p.integer(top["months"], "months", lo=1, hi=MAX_MONTHS))
    if kind == "yearly_clearance":
        top = p.obj(raw, "", required=("kind", "month", "day"))
        month = p.integer(top["month"], "month", lo=1, hi=12)
        last = days_in_month(2000, month)  # a leap year: Feb 29 is allowed
        return YearlyClearance(month, p.integer(top["day"], "day", lo=1, hi=last))
    raise RuleError("kind", "应为 never、rolling_months 或 yearly_clearance")


def expiry_policy_to_dict(policy: ExpiryPolicy) -> dict[str, Any]:
    match policy:
        case Never():
            return {"kind": "never"}
        case RollingMonths(months=months):
            return {"kind": "rolling_months", "months": months}
        case YearlyClearance(month=month, day=day):
            return {"kind": "yearly_clearance", "month": month, "day": day}


def _usable(lot: Lot, now: datetime | None) -> bool:
    if lot.remaining < 0:
        raise ValueError(f"lot {lot.id} has negative remaining")
    if lot.remaining == 0:
        return False
    return now is None or lot.expires_at is None or now < lot.expires_at


def _spend_order(lot: Lot) -> tuple[bool, datetime | None, int]:
    return (lot.expires_at is None, lot.expires_at, lot.id)
