"""Value types of membership tiers: criteria, benefits, downgrade rules and window stats."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

Metric = Literal["spend_fen", "recharge_fen", "points_earned"]
METRICS: tuple[Metric, ...] = ("spend_fen", "recharge_fen", "points_earned")


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Totals inside the rolling window that ends today."""

    spend_fen: int = 0
    recharge_fen: int = 0
    points_earned: int = 0

    def value(self, metric: Metric) -> int:
        return int(getattr(self, metric))


@dataclass(frozen=True, slots=True)
class Criteria:
    window_days: int
    spend_fen: int | None = None
    recharge_fen: int | None = None
    points_earned: int | None = None

    def thresholds(self) -> tuple[tuple[Metric, int], ...]:
        found = ((metric, getattr(self, metric)) for metric in METRICS)
        return tuple((metric, int(value)) for metric, value in found if value is not None)

    def met_by(self, stats: WindowStats) -> bool:
        return any(stats.value(metric) >= threshold for metric, threshold in self.thresholds())


@dataclass(frozen=True, slots=True)
class Benefits:
    """`discount_percent` 95 means 9.5折 (pay 95%); 100 means no discount."""

    discount_percent: int = 100
    points_multiplier: Fraction = Fraction(1)
    birthday_gift_points: int = 0
    upgrade_gift_points: int = 0
    upgrade_gift_coupon_template_ids: tuple[int, ...] = ()
    birthday_gift_coupon_template_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Downgrade:
    """`warn_days`: how many days before a review a member who would drop is warned (0: never)."""

    enabled: bool = False
    every_days: int = 365
    grace_days: int = 0
    warn_days: int = 7


@dataclass(frozen=True, slots=True)
class Tier:
    code: str
    name: str
    rank: int
    criteria: Criteria | None = None
    upgrade_cost_points: int | None = None
    benefits: Benefits = field(default_factory=Benefits)
    downgrade: Downgrade = field(default_factory=Downgrade)

    def qualifies(self, stats: WindowStats) -> bool:
        """Whether window stats earn this tier; the base tier (rank 0) is everyone's."""
        if self.rank == 0:
            return True
        return self.criteria is not None and self.criteria.met_by(stats)
