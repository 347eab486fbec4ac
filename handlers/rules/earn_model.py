"""Value types of the earn rules engine: what a purchase, a member and a rule set look like.

Money is integer fen, points are integers, rates and multipliers are exact `Fraction`s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from fractions import Fraction
from types import MappingProxyType
from typing import Literal

BandMode = Literal["per_purchase", "cumulative"]


def _no_fractions() -> Mapping[str, Fraction]:
    return MappingProxyType({})


def _no_ints() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Item:
    sku: str
    category: str
    qty: int
    unit_price_fen: int

    def __post_init__(self) -> None:
        if self.qty < 1 or self.unit_price_fen < 0:
            raise ValueError("item qty must be >= 1 and unit_price_fen >= 0")

    @property
    def total_fen(self) -> int:
        return self.qty * self.unit_price_fen


@dataclass(frozen=True, slots=True)
class Purchase:
    """`amount_fen` is what was actually paid; items only weight how it splits across categories."""

    amount_fen: int
    items: tuple[Item, ...]
    store_code: str
    at: datetime

    def __post_init__(self) -> None:
        if self.amount_fen < 0:
            raise ValueError("amount_fen must be >= 0")
        if self.at.utcoffset() is None:
            raise ValueError("purchase time must be timezone-aware")


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """`period_spend_fen` is cumulative spend in the current period *before* this purchase."""

    tier_code: str
    period_spend_fen: int = 0
    points_today: int = 0
    tier_name: str = ""

    def __post_init__(self) -> None:
        if self.period_spend_fen < 0 or self.points_today < 0:
            raise ValueError("period_spend_fen and points_today must be >= 0")


@dataclass(frozen=True, slots=True)
class Band:
    """Spend band [min_fen, max_fen); `max_fen=None` is open-ended."""

    min_fen: int
    max_fen: int | None
    multiplier: Fraction

    def overlap(self, start: int, end: int) -> int:
        """Fen of the half-open range [start, end) that fall inside this band."""
        top = end if self.max_fen is None else min(end, self.max_fen)
        return max(0, top - max(start, self.min_fen))


@dataclass(frozen=True, slots=True)
class Promotion:
    """Dates are inclusive in merchant-local time; weekdays use Monday=0 … Sunday=6."""

    code: str
    label: str
    start: date
    end: date
    multiplier: Fraction
    weekdays: frozenset[int] | None = None
    store_codes: frozenset[str] | None = None

    def applies(self, local_day: date, store_code: str) -> bool:
        return (
            self.start <= local_day <= self.end
            and (self.weekdays is None or local_day.weekday() in self.weekdays)
            and (self.store_codes is None or store_code in self.store_codes)
        )


@dataclass(frozen=True, slots=True)
class RuleSet:
    version: int
    points_per_yuan: Fraction
    timezone: str = "Asia/Shanghai"
    band_mode: BandMode = "per_purchase"
    bands: tuple[Band, ...] = ()
    tier_multipliers: Mapping[str, Fraction] = field(default_factory=_no_fractions)
    category_multipliers: Mapping[str, Fraction] = field(default_factory=_no_fractions)
    sku_multipliers: Mapping[str, Fraction] = field(default_factory=_no_fractions)
    sku_bonuses: Mapping[str, int] = field(default_factory=_no_ints)
    promotions: tuple[Promotion, ...] = ()
    per_purchase_cap: int | None = None
    daily_cap: int | None = None


@dataclass(frozen=True, slots=True)
class BreakdownLine:
    """One rule's signed integer contribution; `label` is shown to members (Simplified Chinese)."""

    code: str
    label: str
    points: int


@dataclass(frozen=True, slots=True)
class EarnResult:
    points: int
    breakdown: tuple[BreakdownLine, ...]
    rule_set_version: int
