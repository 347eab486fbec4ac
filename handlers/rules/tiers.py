"""Membership tiers: upgrade, downgrade and progress, judged on stats from one rolling window.

Every tier's criteria are any-of thresholds (points earned, spend, recharge) over the same rolling
window of N days; the point *balance* never counts. A tier may also be bought with points
(`upgrade_cost_points`); that purchase is a use case, not an evaluation.

Downgrade reviews fall on tier_since + k × every_days (k ≥ 1). Reviews earlier than
tier_since + grace_days are skipped, so nobody is downgraded inside the grace period. At a review
a member who still meets the current tier's criteria keeps it; otherwise they drop to the highest
lower tier whose criteria they meet (the base tier always qualifies). A tier that was bought and
has no criteria cannot be kept by stats, so with downgrade enabled it lapses at its first review.
`next_review` is the review ahead, and `downgrade_warning` what a member who would drop at it, judged
by the same rule on today's stats, still needs to keep the tier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from handlers.rules.errors import RuleError
from handlers.rules.tiers_config import tiers_to_dicts, validate_tiers
from handlers.rules.tiers_model import METRICS, Benefits, Criteria, Downgrade, Metric, Tier, WindowStats

__all__ = [
    "METRICS",
    "Benefits",
    "Criteria",
    "Downgrade",
    "Metric",
    "Progress",
    "Remaining",
    "RuleError",
    "Tier",
    "WindowStats",
    "downgrade_warning",
    "due_review",
    "evaluate_downgrade",
    "evaluate_upgrade",
    "next_review",
    "progress",
    "purchasable_tiers",
    "tiers_to_dicts",
    "upgrade_thresholds",
    "validate_tiers",
    "window_days",
]


@dataclass(frozen=True, slots=True)
class Remaining:
    """How much more of `metric` reaches `tier_code` — the nearest tier that counts this metric."""

    metric: Metric
    amount: int
    tier_code: str


@dataclass(frozen=True, slots=True)
class Progress:
    next_tier: Tier
    remaining: tuple[Remaining, ...]
    deadline: date
    message: str


def evaluate_upgrade(tiers: Sequence[Tier], current_code: str, window_stats: WindowStats) -> Tier | None:
    """The highest tier above the current one whose criteria the stats meet, else None."""
    current = _find(tiers, current_code)
    above = [t for t in _ranked(tiers) if t.rank > current.rank and t.qualifies(window_stats)]
    return above[-1] if above else None


def window_days(tiers: Sequence[Tier], default: int = 365) -> int:
    """The ladder's rolling window (every tier's criteria share it)."""
    return next((t.criteria.window_days for t in tiers if t.criteria is not None), default)


def upgrade_thresholds(tiers: Sequence[Tier], current_code: str) -> tuple[int | None, int | None]:
    """The least window spend and the least points earned that reach any tier above the current one
    (None: no tier above counts that metric) — what a purchase, which adds to those two, can cross."""
    current = _find(tiers, current_code)
    above = [t.criteria for t in tiers if t.rank > current.rank and t.criteria is not None]
    spend = [c.spend_fen for c in above if c.spend_fen is not None]
    earned = [c.points_earned for c in above if c.points_earned is not None]
    return (min(spend) if spend else None), (min(earned) if earned else None)


def due_review(tier: Tier, tier_since: date, today: date, last_review: date | None = None) -> date | None:
    """The latest downgrade review on or before today that is outside grace and not yet done."""
    rules = tier.downgrade
    if not rules.enabled or tier.rank == 0:
        return None
    cycles = (today - tier_since).days // rules.every_days
    if cycles < 1:
        return None
    review = tier_since + timedelta(days=cycles * rules.every_days)
    if review < tier_since + timedelta(days=rules.grace_days):
        return None
    if last_review is not None and review <= last_review:
        return None
    return review


def next_review(tier: Tier, tier_since: date, today: date, last_review: date | None = None) -> date | None:
    """The first downgrade review on or after today that is outside grace and not yet done (None: the
    tier is not reviewed). On that day `due_review` returns it."""
    rules = tier.downgrade
    if not rules.enabled or tier.rank == 0:
        return None
    earliest = max(today, tier_since + timedelta(days=max(rules.grace_days, 1)))
    if last_review is not None:
        earliest = max(earliest, last_review + timedelta(days=1))
    cycles = -(-(earliest - tier_since).days // rules.every_days)  # rounded up
    return tier_since + timedelta(days=cycles * rules.every_days)


def evaluate_downgrade(
    tiers: Sequence[Tier],
    current_code: str,
    window_stats: WindowStats,
    tier_since: date,
    today: date,
    *,
    last_review: date | None = None,
) -> Tier | None:
    """The tier to drop to if a review is due today and the member no longer qualifies, else None.

    `tier_since` is when the member reached the current tier; `last_review` the last review already
    applied (so a missed daily run catches up once, and a done review is not repeated).
    """
    current = _find(tiers, current_code)
    if due_review(current, tier_since, today, last_review) is None or current.qualifies(window_stats):
        return None
    below = [t for t in _ranked(tiers) if t.rank < current.rank and t.qualifies(window_stats)]
    return below[-1] if below else None


def downgrade_warning(
    tiers: Sequence[Tier],
    current_code: str,
    window_stats: WindowStats,
    tier_since: date,
    review: date,
    *,
    last_review: date | None = None,
) -> str | None:
    """None if, by `evaluate_downgrade` on these stats, the member keeps the tier at `review`; else what
    they still need to keep it ("再消费 200 元即可保级"), or, for a tier without criteria, where they go."""
    target = evaluate_downgrade(
        tiers, current_code, window_stats, tier_since, review, last_review=last_review
    )
    if target is None:
        return None
    current = _find(tiers, current_code)
    if current.criteria is None:
        return f"复核后将调整为{target.name}"
    gaps = [
        Remaining(metric, threshold - window_stats.value(metric), current.code)
        for metric, threshold in current.criteria.thresholds()
    ]
    return f"{'或'.join(_more(gap) for gap in gaps)}即可保级"


def progress(
    tiers: Sequence[Tier], current_code: str, window_stats: WindowStats, window_end: date
) -> Progress | None:
    """How far the member is from the next tier up (the lowest with criteria), or None at the top."""
    current = _find(tiers, current_code)
    higher = [t for t in _ranked(tiers) if t.rank > current.rank and t.criteria is not None]
    if not higher:
        return None
    remaining: list[Remaining] = []
    for metric in METRICS:
        for tier in higher:
            threshold = _threshold(tier, metric)
            if threshold is not None:
                gap = max(0, threshold - window_stats.value(metric))
                remaining.append(Remaining(metric, gap, tier.code))
                break
    target = higher[0]
    own = [r for r in remaining if r.tier_code == target.code]
    return Progress(target, tuple(remaining), window_end, _sentence(target, own, window_end))


def purchasable_tiers(tiers: Sequence[Tier], current_code: str) -> list[Tier]:
    """Tiers above the current one that can be bought with points, cheapest rank first."""
    current = _find(tiers, current_code)
    return [t for t in _ranked(tiers) if t.rank > current.rank and t.upgrade_cost_points is not None]


def _sentence(target: Tier, own: list[Remaining], deadline: date) -> str:
    if any(r.amount == 0 for r in own):
        return f"已满足升级为{target.name}的条件"
    return f"{'或'.join(_more(r) for r in own)}即可在 {deadline.isoformat()} 前升级为{target.name}"


_MORE = {"spend_fen": "再消费 {} 元", "recharge_fen": "再充值 {} 元", "points_earned": "再获得 {} 积分"}


def _more(remaining: Remaining) -> str:
    return _MORE[remaining.metric].format(_amount(remaining))


def _amount(remaining: Remaining) -> str:
    if remaining.metric == "points_earned":
        return str(remaining.amount)
    yuan, fen = divmod(remaining.amount, 100)
    return str(yuan) if fen == 0 else f"{yuan}.{fen:02d}"


def _threshold(tier: Tier, metric: Metric) -> int | None:
    return dict(tier.criteria.thresholds()).get(metric) if tier.criteria else None


def _ranked(tiers: Sequence[Tier]) -> list[Tier]:
    return sorted(tiers, key=lambda t: t.rank)


def _find(tiers: Sequence[Tier], code: str) -> Tier:
    for tier in tiers:
        if tier.code == code:
            return tier
    raise RuleError("current_code", f"未知等级 {code}")
