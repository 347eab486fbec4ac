"""The earn rules engine: how many points a purchase earns, with a breakdown that sums exactly.

Combination order (the only one; every step is exact `Fraction` arithmetic until the single floor):

1. base = amount_fen / 100 × points_per_yuan.
2. Item multipliers: the paid amount is split across items pro-rata to qty × unit_price_fen; each
   item's share of the base is multiplied by its SKU multiplier, or else its category multiplier
   (the more specific rule wins; they never stack). No items, or items worth 0 fen: no item rules.
3. × spend-band multiplier. `per_purchase`: the band containing this purchase's amount_fen.
   `cumulative`: the fen of [period_spend, period_spend + amount) inside each band earn that
   band's multiplier, fen outside every band earn 1× (a weighted multiplier).
4. × tier multiplier of the member's tier (1× when the tier has none).
5. × the best applicable promotion, judged on the purchase's merchant-local date: promotions never
   stack; the highest multiplier wins, ties go to the earliest start date, then the smaller code.
6. floor once.
7. + fixed SKU bonuses (points per unit bought).
8. per-purchase cap, then 9. daily cap (minus points already earned today), then 10. the campaign
   pool budget passed in by the caller (which enforces the pool atomically).

Breakdown: the base line is floor(base); each multiplier's line is floor(value after it) minus
floor(value before it), so multiplier lines are never negative and all lines telescope to the
total exactly. Bonus lines are +N; a cap that bites adds one negative line. Zero lines are omitted
except the base line. The result is never negative.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from zoneinfo import ZoneInfo

from handlers.rules._parse import fraction_text
from handlers.rules.earn_config import rule_set_to_dict, validate_rule_set
from handlers.rules.earn_model import (
    Band,
    BandMode,
    BreakdownLine,
    EarnResult,
    Item,
    MemberInfo,
    Promotion,
    Purchase,
    RuleSet,
)
from handlers.rules.errors import RuleError

__all__ = [
    "Band",
    "BandMode",
    "BreakdownLine",
    "EarnResult",
    "Item",
    "MemberInfo",
    "Promotion",
    "Purchase",
    "RuleError",
    "RuleSet",
    "best_promotion",
    "compute_earn",
    "points_to_fen",
    "rule_set_to_dict",
    "validate_rule_set",
]

_ONE = Fraction(1)


def compute_earn(
    purchase: Purchase, member: MemberInfo, rules: RuleSet, *, pool_remaining: int | None = None
) -> EarnResult:
    """Points earned by `purchase`; `pool_remaining=None` means the purchase draws on no campaign pool."""
    stages = list(_multiplied_stages(purchase, member, rules))
    lines: list[BreakdownLine] = []
    floor_before = 0
    for index, (code, label, exact) in enumerate(stages):
        delta = math.floor(exact) - floor_before
        floor_before += delta
        if delta or index == 0:
            lines.append(BreakdownLine(code, label, delta))
    total = floor_before
    for sku, bonus in _sku_bonuses(purchase, rules):
        lines.append(BreakdownLine(f"bonus:{sku}", f"商品 {sku} 奖励", bonus))
        total += bonus
    for code, label, limit in _limits(member, rules, pool_remaining):
        if limit is not None and total > limit:
            lines.append(BreakdownLine(code, label, limit - total))
            total = limit
    return EarnResult(points=total, breakdown=tuple(lines), rule_set_version=rules.version)


def best_promotion(purchase: Purchase, rules: RuleSet) -> Promotion | None:
    """The promotion that applies: highest multiplier, then earliest start, then smallest code."""
    local_day = purchase.at.astimezone(ZoneInfo(rules.timezone)).date()
    candidates = [p for p in rules.promotions if p.applies(local_day, purchase.store_code)]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (-p.multiplier, p.start, p.code))


def points_to_fen(points: int, points_per_yuan_cash: int = 100) -> int:
    """What `points` cost the merchant in fen when `points_per_yuan_cash` points are worth 1 yuan.

    Rounded half up to the nearest fen.
    """
    if points < 0 or points_per_yuan_cash <= 0:
        raise ValueError("points must be >= 0 and points_per_yuan_cash > 0")
    return (points * 200 + points_per_yuan_cash) // (2 * points_per_yuan_cash)


def _multiplied_stages(
    purchase: Purchase, member: MemberInfo, rules: RuleSet
) -> Iterator[tuple[str, str, Fraction]]:
    """(code, label, exact running value after the rule), starting with the base."""
    value = Fraction(purchase.amount_fen) * rules.points_per_yuan / 100
    yield "base", "基础积分", value
    for code, label, extra in _item_extras(purchase, rules, value):
        value += extra
        yield code, label, value
    band, band_label = _band_factor(purchase.amount_fen, member.period_spend_fen, rules)
    value *= band
    yield "band", band_label, value
    tier = rules.tier_multipliers.get(member.tier_code, _ONE)
    value *= tier
    yield f"tier:{member.tier_code}", f"{member.tier_name or member.tier_code} {_times(tier)} 倍", value
    promotion = best_promotion(purchase, rules)
    if promotion is not None:
        value *= promotion.multiplier
        yield f"promo:{promotion.code}", f"{promotion.label} {_times(promotion.multiplier)} 倍", value


def _item_extras(purchase: Purchase, rules: RuleSet, base: Fraction) -> Iterator[tuple[str, str, Fraction]]:
    """Extra exact points per item rule: categories first, then SKUs, each in code order."""
    items_total = sum(item.total_fen for item in purchase.items)
    if items_total == 0:
        return
    extras: dict[tuple[int, str], Fraction] = {}
    multipliers: dict[tuple[int, str], Fraction] = {}
    for item in purchase.items:
        key, multiplier = _item_rule(item, rules)
        if key is None:
            continue
        share = base * item.total_fen / items_total
        extras[key] = extras.get(key, Fraction(0)) + share * (multiplier - 1)
        multipliers[key] = multiplier
    for key in sorted(extras):
        kind, code = key
        times = _times(multipliers[key])
        if kind == 0:
            yield f"category:{code}", f"品类 {code} {times} 倍", extras[key]
        else:
            yield f"sku:{code}", f"商品 {code} {times} 倍", extras[key]


def _item_rule(item: Item, rules: RuleSet) -> tuple[tuple[int, str] | None, Fraction]:
    if item.sku in rules.sku_multipliers:
        return (1, item.sku), rules.sku_multipliers[item.sku]
    if item.category in rules.category_multipliers:
        return (0, item.category), rules.category_multipliers[item.category]
    return None, _ONE


def _band_factor(amount_fen: int, period_spend_fen: int, rules: RuleSet) -> tuple[Fraction, str]:
    if amount_fen == 0 or not rules.bands:
        return _ONE, "消费档位"
    if rules.band_mode == "per_purchase":
        band = _band_for(amount_fen, rules.bands)
        if band is None:
            return _ONE, "消费档位"
        floor = f"消费满 {_yuan(band.min_fen)} 元" if band.min_fen else "消费档位"
        return band.multiplier, f"{floor} {_times(band.multiplier)} 倍"
    start, end = period_spend_fen, period_spend_fen + amount_fen
    covered = weighted = Fraction(0)
    for band in rules.bands:
        inside = band.overlap(start, end)
        covered += inside
        weighted += inside * band.multiplier
    return (weighted + amount_fen - covered) / amount_fen, "累计消费档位加成"


def _band_for(amount_fen: int, bands: tuple[Band, ...]) -> Band | None:
    for band in bands:
        if band.min_fen <= amount_fen and (band.max_fen is None or amount_fen < band.max_fen):
            return band
    return None


def _sku_bonuses(purchase: Purchase, rules: RuleSet) -> list[tuple[str, int]]:
    units: dict[str, int] = {}
    for item in purchase.items:
        if rules.sku_bonuses.get(item.sku):
            units[item.sku] = units.get(item.sku, 0) + item.qty
    return [(sku, rules.sku_bonuses[sku] * qty) for sku, qty in sorted(units.items())]


def _limits(
    member: MemberInfo, rules: RuleSet, pool_remaining: int | None
) -> list[tuple[str, str, int | None]]:
    daily = None if rules.daily_cap is None else max(0, rules.daily_cap - member.points_today)
    pool = None if pool_remaining is None else max(0, pool_remaining)
    return [
        ("cap:purchase", "单笔上限", rules.per_purchase_cap),
        ("cap:daily", "每日上限", daily),
        ("cap:pool", "活动积分池", pool),
    ]


def _times(multiplier: Fraction) -> str:
    shown = fraction_text(multiplier)
    return fraction_text(round(multiplier, 2)) if "/" in shown else shown


def _yuan(fen: int) -> str:
    return fraction_text(Fraction(fen, 100))
