"""Parse a tier ladder from JSON-like data (strictly) and render it back; the two round-trip."""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from handlers.rules import _parse as p
from handlers.rules.errors import RuleError
from handlers.rules.tiers_model import METRICS, Benefits, Criteria, Downgrade, Metric, Tier

MAX_DAYS = 3660
MAX_WARN_DAYS = 90
MAX_POINTS = 10**9
MAX_FEN = 10**12
_BENEFIT_KEYS = (
    "discount_percent",
    "points_multiplier",
    "birthday_gift_points",
    "upgrade_gift_points",
    "upgrade_gift_coupon_template_ids",
    "birthday_gift_coupon_template_ids",
)


def validate_tiers(raw: object) -> list[Tier]:
    """Tiers in rank order; raises `RuleError` naming the first invalid field.

    The first tier is the base: rank 0, no criteria, no price, no downgrade. Ranks strictly
    increase, codes are unique, every other tier has criteria or a points price, all criteria use
    one window, and each threshold is at least the same threshold of any lower tier.
    """
    entries = p.items(raw, "tiers")
    if not entries:
        raise RuleError("tiers", "至少需要一个基础等级")
    tiers: list[Tier] = []
    for index, entry in enumerate(entries):
        tier = _tier(entry, p.join("tiers", index))
        _check_ladder(tiers, tier, p.join("tiers", index))
        tiers.append(tier)
    return tiers


def tiers_to_dicts(tiers: list[Tier]) -> list[dict[str, Any]]:
    """JSON-ready data that `validate_tiers` turns back into equal tiers."""
    return [_tier_out(tier) for tier in tiers]


def _tier(entry: object, path: str) -> Tier:
    raw = p.obj(
        entry,
        path,
        required=("code", "name", "rank"),
        optional=("criteria", "upgrade_cost_points", "benefits", "downgrade"),
    )
    criteria_raw = raw.get("criteria")
    return Tier(
        code=p.text(raw["code"], p.join(path, "code"), max_len=32),
        name=p.text(raw["name"], p.join(path, "name"), max_len=32),
        rank=p.integer(raw["rank"], p.join(path, "rank"), lo=0, hi=1000),
        criteria=None if criteria_raw is None else _criteria(criteria_raw, p.join(path, "criteria")),
        upgrade_cost_points=p.opt_integer(
            raw.get("upgrade_cost_points"), p.join(path, "upgrade_cost_points"), lo=1, hi=MAX_POINTS
        ),
        benefits=_benefits(raw.get("benefits", {}), p.join(path, "benefits")),
        downgrade=_downgrade(raw.get("downgrade", {}), p.join(path, "downgrade")),
    )


def _criteria(entry: object, path: str) -> Criteria:
    raw = p.obj(entry, path, required=("window_days",), optional=METRICS)
    limits = {"spend_fen": MAX_FEN, "recharge_fen": MAX_FEN, "points_earned": MAX_POINTS}
    values = {m: p.opt_integer(raw.get(m), p.join(path, m), lo=1, hi=limits[m]) for m in METRICS}
    if all(value is None for value in values.values()):
        raise RuleError(path, "至少设置一项升级门槛")
    window = p.integer(raw["window_days"], p.join(path, "window_days"), lo=1, hi=MAX_DAYS)
    return Criteria(window, values["spend_fen"], values["recharge_fen"], values["points_earned"])


def _template_ids(raw: Mapping[str, object], path: str, key: str) -> tuple[int, ...]:
    where = p.join(path, key)
    ids = tuple(
        p.integer(value, p.join(where, i), lo=1) for i, value in enumerate(p.items(raw.get(key, []), where))
    )
    if len(set(ids)) != len(ids):
        raise RuleError(where, "券模板重复")
    return ids


def _benefits(entry: object, path: str) -> Benefits:
    raw = p.obj(entry, path, optional=_BENEFIT_KEYS)

    def points(key: str) -> int:
        return p.integer(raw.get(key, 0), p.join(path, key), lo=0, hi=MAX_POINTS)

    return Benefits(
        discount_percent=p.integer(
            raw.get("discount_percent", 100), p.join(path, "discount_percent"), lo=1, hi=100
        ),
        points_multiplier=p.fraction(
            raw.get("points_multiplier", 1),
            p.join(path, "points_multiplier"),
            lo=Fraction(1),
            hi=Fraction(100),
        ),
        birthday_gift_points=points("birthday_gift_points"),
        upgrade_gift_points=points("upgrade_gift_points"),
        upgrade_gift_coupon_template_ids=_template_ids(raw, path, "upgrade_gift_coupon_template_ids"),
        birthday_gift_coupon_template_ids=_template_ids(raw, path, "birthday_gift_coupon_template_ids"),
    )


def _downgrade(entry: object, path: str) -> Downgrade:
    raw = p.obj(entry, path, optional=("enabled", "every_days", "grace_days", "warn_days"))
    return Downgrade(
        enabled=p.boolean(raw.get("enabled", False), p.join(path, "enabled")),
        every_days=p.integer(raw.get("every_days", 365), p.join(path, "every_days"), lo=1, hi=MAX_DAYS),
        grace_days=p.integer(raw.get("grace_days", 0), p.join(path, "grace_days"), lo=0, hi=MAX_DAYS),
        warn_days=p.integer(raw.get("warn_days", 7), p.join(path, "warn_days"), lo=0, hi=MAX_WARN_DAYS),
    )


def _check_ladder(lower: list[Tier], tier: Tier, path: str) -> None:
    if not lower:
        _check_base(tier, path)
        return
    if tier.rank <= lower[-1].rank:
        raise RuleError(p.join(path, "rank"), "等级须按 rank 严格递增排列")
    if any(t.code == tier.code for t in lower):
        raise RuleError(p.join(path, "code"), "等级编码重复")
    if tier.criteria is None:
        if tier.upgrade_cost_points is None:
            raise RuleError(p.join(path, "criteria"), "须设置升级条件或积分购买价格")
        return
    for earlier in lower:
        if earlier.criteria is not None and earlier.criteria.window_days != tier.criteria.window_days:
            raise RuleError(p.join(path, "criteria.window_days"), "所有等级须使用相同的统计周期")
    for metric, threshold in tier.criteria.thresholds():
        floor = _highest_threshold(lower, metric)
        if floor is not None and threshold < floor:
            raise RuleError(p.join(path, f"criteria.{metric}"), "门槛不能低于较低等级")


def _check_base(tier: Tier, path: str) -> None:
    if tier.rank != 0:
        raise RuleError(p.join(path, "rank"), "第一个等级须为 rank 0 的基础等级")
    if tier.criteria is not None:
        raise RuleError(p.join(path, "criteria"), "基础等级不能设置升级条件")
    if tier.upgrade_cost_points is not None:
        raise RuleError(p.join(path, "upgrade_cost_points"), "基础等级不能设置购买价格")
    if tier.downgrade.enabled:
        raise RuleError(p.join(path, "downgrade.enabled"), "基础等级不能降级")


def _highest_threshold(tiers: list[Tier], metric: Metric) -> int | None:
    found = [dict(t.criteria.thresholds()).get(metric) for t in tiers if t.criteria is not None]
    present = [value for value in found if value is not None]
    return max(present) if present else None


def _tier_out(tier: Tier) -> dict[str, Any]:
    benefits = tier.benefits
    return {
        "code": tier.code,
        "name": tier.name,
        "rank": tier.rank,
        "criteria": None if tier.criteria is None else _criteria_out(tier.criteria),
        "upgrade_cost_points": tier.upgrade_cost_points,
        "benefits": {
            "discount_percent": benefits.discount_percent,
            "points_multiplier": p.fraction_text(benefits.points_multiplier),
            "birthday_gift_points": benefits.birthday_gift_points,
            "upgrade_gift_points": benefits.upgrade_gift_points,
            "upgrade_gift_coupon_template_ids": list(benefits.upgrade_gift_coupon_template_ids),
            "birthday_gift_coupon_template_ids": list(benefits.birthday_gift_coupon_template_ids),
        },
        "downgrade": {
            "enabled": tier.downgrade.enabled,
            "every_days": tier.downgrade.every_days,
            "grace_days": tier.downgrade.grace_days,
            "warn_days": tier.downgrade.warn_days,
        },
    }


def _criteria_out(criteria: Criteria) -> Mapping[str, int | None]:
    return {"window_days": criteria.window_days, **{m: getattr(criteria, m) for m in METRICS}}
