"""Parse an earn rule set from JSON-like data (strictly) and render it back; the two round-trip."""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from types import MappingProxyType
from typing import Any

from handlers.rules import _parse as p
from handlers.rules.earn_model import Band, BandMode, Promotion, RuleSet
from handlers.rules.errors import RuleError

MIN_MULTIPLIER = Fraction(1)
MAX_MULTIPLIER = Fraction(100)
MAX_POINTS_PER_YUAN = Fraction(10_000)
MAX_SKU_BONUS = 1_000_000

_TOP_OPTIONAL = (
    "timezone",
    "band_mode",
    "bands",
    "tier_multipliers",
    "category_multipliers",
    "sku_multipliers",
    "sku_bonuses",
    "promotions",
    "per_purchase_cap",
    "daily_cap",
)
_BAND_MODES: tuple[BandMode, ...] = ("per_purchase", "cumulative")


def validate_rule_set(raw: object) -> RuleSet:
    """A `RuleSet` from JSON-like data; raises `RuleError` naming the first invalid field."""
    top = p.obj(raw, "", required=("version", "points_per_yuan"), optional=_TOP_OPTIONAL)
    mode = top.get("band_mode", "per_purchase")
    if mode not in _BAND_MODES:
        raise RuleError("band_mode", "应为 per_purchase 或 cumulative")
    return RuleSet(
        version=p.integer(top["version"], "version", lo=1),
        points_per_yuan=p.fraction(
            top["points_per_yuan"], "points_per_yuan", lo=Fraction(0), hi=MAX_POINTS_PER_YUAN
        ),
        timezone=p.timezone(top.get("timezone", "Asia/Shanghai"), "timezone"),
        band_mode=mode,
        bands=_bands(top.get("bands", [])),
        tier_multipliers=_multipliers(top.get("tier_multipliers", {}), "tier_multipliers"),
        category_multipliers=_multipliers(top.get("category_multipliers", {}), "category_multipliers"),
        sku_multipliers=_multipliers(top.get("sku_multipliers", {}), "sku_multipliers"),
        sku_bonuses=_bonuses(top.get("sku_bonuses", {})),
        promotions=_promotions(top.get("promotions", [])),
        per_purchase_cap=p.opt_integer(top.get("per_purchase_cap"), "per_purchase_cap", lo=0),
        daily_cap=p.opt_integer(top.get("daily_cap"), "daily_cap", lo=0),
    )


def rule_set_to_dict(rules: RuleSet) -> dict[str, Any]:
    """JSON-ready data that `validate_rule_set` turns back into an equal `RuleSet`."""
    return {
        "version": rules.version,
        "points_per_yuan": p.fraction_text(rules.points_per_yuan),
        "timezone": rules.timezone,
        "band_mode": rules.band_mode,
        "bands": [
            {"min_fen": b.min_fen, "max_fen": b.max_fen, "multiplier": p.fraction_text(b.multiplier)}
            for b in rules.bands
        ],
        "tier_multipliers": _fractions_out(rules.tier_multipliers),
        "category_multipliers": _fractions_out(rules.category_multipliers),
        "sku_multipliers": _fractions_out(rules.sku_multipliers),
        "sku_bonuses": dict(sorted(rules.sku_bonuses.items())),
        "promotions": [_promotion_out(promo) for promo in rules.promotions],
        "per_purchase_cap": rules.per_purchase_cap,
        "daily_cap": rules.daily_cap,
    }


def _bands(raw: object) -> tuple[Band, ...]:
    bands: list[Band] = []
    for index, entry in enumerate(p.items(raw, "bands")):
        path = p.join("bands", index)
        band_raw = p.obj(entry, path, required=("min_fen", "multiplier"), optional=("max_fen",))
        min_fen = p.integer(band_raw["min_fen"], p.join(path, "min_fen"), lo=0)
        max_fen = p.opt_integer(band_raw.get("max_fen"), p.join(path, "max_fen"), lo=min_fen + 1)
        multiplier = _multiplier(band_raw["multiplier"], p.join(path, "multiplier"))
        if bands:
            _check_follows(bands[-1], min_fen, multiplier, path)
        bands.append(Band(min_fen, max_fen, multiplier))
    if bands and bands[-1].max_fen is not None:
        raise RuleError(p.join(p.join("bands", len(bands) - 1), "max_fen"), "最高一档不应设上限")
    return tuple(bands)


def _check_follows(previous: Band, min_fen: int, multiplier: Fraction, path: str) -> None:
    """Bands ascend without gaps or overlaps, and a higher band never earns less."""
    if min_fen < previous.min_fen:
        raise RuleError(p.join(path, "min_fen"), "消费档位须按金额升序排列")
    if previous.max_fen is None or min_fen < previous.max_fen:
        raise RuleError(p.join(path, "min_fen"), "与上一档重叠")
    if min_fen > previous.max_fen:
        raise RuleError(p.join(path, "min_fen"), "须从上一档的上限开始，档位之间不能有空档")
    if multiplier < previous.multiplier:
        raise RuleError(p.join(path, "multiplier"), "倍数不能低于上一档")


def _multiplier(raw: object, path: str) -> Fraction:
    return p.fraction(raw, path, lo=MIN_MULTIPLIER, hi=MAX_MULTIPLIER)


def _multipliers(raw: object, path: str) -> Mapping[str, Fraction]:
    table = p.obj(raw, path, optional=_string_keys(raw, path))
    return MappingProxyType({key: _multiplier(value, p.join(path, key)) for key, value in table.items()})


def _bonuses(raw: object) -> Mapping[str, int]:
    table = p.obj(raw, "sku_bonuses", optional=_string_keys(raw, "sku_bonuses"))
    return MappingProxyType(
        {
            key: p.integer(value, p.join("sku_bonuses", key), lo=0, hi=MAX_SKU_BONUS)
            for key, value in table.items()
        }
    )


def _string_keys(raw: object, path: str) -> tuple[str, ...]:
    """Every key of a code-keyed table, each checked to be a sensible non-empty code."""
    if not isinstance(raw, Mapping):
        raise RuleError(path, "应为对象")
    keys = tuple(raw)
    for key in keys:
        if not isinstance(key, str):
            raise RuleError(path, "键应为字符串")
        p.text(key, p.join(path, key))
    return keys


def _promotions(raw: object) -> tuple[Promotion, ...]:
    promotions: list[Promotion] = []
    seen: set[str] = set()
    for index, entry in enumerate(p.items(raw, "promotions")):
        promotion = _promotion(entry, p.join("promotions", index))
        if promotion.code in seen:
            raise RuleError(p.join(p.join("promotions", index), "code"), "活动编码重复")
        seen.add(promotion.code)
        promotions.append(promotion)
    return tuple(promotions)


def _promotion(entry: object, path: str) -> Promotion:
    raw = p.obj(
        entry,
        path,
        required=("code", "label", "start", "end", "multiplier"),
        optional=("weekdays", "store_codes"),
    )
    start = p.iso_date(raw["start"], p.join(path, "start"))
    end = p.iso_date(raw["end"], p.join(path, "end"))
    if end < start:
        raise RuleError(p.join(path, "end"), "结束日期不能早于开始日期")
    return Promotion(
        code=p.text(raw["code"], p.join(path, "code")),
        label=p.text(raw["label"], p.join(path, "label"), max_len=32),
        start=start,
        end=end,
        multiplier=_multiplier(raw["multiplier"], p.join(path, "multiplier")),
        weekdays=_weekdays(raw.get("weekdays"), p.join(path, "weekdays")),
        store_codes=_store_codes(raw.get("store_codes"), p.join(path, "store_codes")),
    )


def _weekdays(raw: object, path: str) -> frozenset[int] | None:
    if raw is None:
        return None
    days = [p.integer(day, p.join(path, i), lo=0, hi=6) for i, day in enumerate(p.items(raw, path))]
    if not days:
        raise RuleError(path, "至少选择一天，或不设置")
    return frozenset(days)


def _store_codes(raw: object, path: str) -> frozenset[str] | None:
    if raw is None:
        return None
    codes = [p.text(code, p.join(path, i)) for i, code in enumerate(p.items(raw, path))]
    if not codes:
        raise RuleError(path, "至少选择一个门店，或不设置")
    return frozenset(codes)


def _fractions_out(table: Mapping[str, Fraction]) -> dict[str, str]:
    return {key: p.fraction_text(value) for key, value in sorted(table.items())}


def _promotion_out(promo: Promotion) -> dict[str, Any]:
    return {
        "code": promo.code,
        "label": promo.label,
        "start": promo.start.isoformat(),
        "end": promo.end.isoformat(),
        "multiplier": p.fraction_text(promo.multiplier),
        "weekdays": None if promo.weekdays is None else sorted(promo.weekdays),
        "store_codes": None if promo.store_codes is None else sorted(promo.store_codes),
    }
