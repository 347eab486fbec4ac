from __future__ import annotations

import copy
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.rules.earn import Band, RuleError, rule_set_to_dict, validate_rule_set

VALID: dict[str, Any] = {
    "version": 3,
    "points_per_yuan": "1.5",
    "timezone": "Asia/Shanghai",
    "band_mode": "cumulative",
    "bands": [
        {"min_fen": 100_000, "max_fen": 200_000, "multiplier": 1},
        {"min_fen": 200_000, "max_fen": 500_000, "multiplier": "1.5"},
        {"min_fen": 500_000, "multiplier": "2"},
    ],
    "tier_multipliers": {"gold": "1.5", "silver": "6/5"},
    "category_multipliers": {"wine": 2},
    "sku_multipliers": {"SKU-1": "3"},
    "sku_bonuses": {"SKU-2": 10},
    "promotions": [
        {"code": "xmas", "label": "圣诞", "start": "2026-12-24", "end": "2026-12-26", "multiplier": 3},
        {
            "code": "wkd",
            "label": "周末",
            "start": "2026-01-01",
            "end": "2026-12-31",
            "multiplier": "2",
            "weekdays": [5, 6],
            "store_codes": ["S1"],
        },
    ],
    "per_purchase_cap": 5_000,
    "daily_cap": 20_000,
}


def changed(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    raw = copy.deepcopy(VALID)
    target: Any = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return raw


def without(*keys: str) -> dict[str, Any]:
    return {k: v for k, v in VALID.items() if k not in keys}


def test_valid_rule_set_parses() -> None:
    rules = validate_rule_set(VALID)
    assert rules.version == 3
    assert rules.points_per_yuan == Fraction(3, 2)
    assert rules.bands[1] == Band(200_000, 500_000, Fraction(3, 2))
    assert rules.tier_multipliers["silver"] == Fraction(6, 5)
    assert rules.promotions[1].weekdays == frozenset({5, 6})
    assert rules.promotions[1].store_codes == frozenset({"S1"})


def test_minimal_rule_set_has_safe_defaults() -> None:
    rules = validate_rule_set({"version": 1, "points_per_yuan": 1})
    assert (rules.timezone, rules.band_mode) == ("Asia/Shanghai", "per_purchase")
    assert rules.bands == () and rules.promotions == ()
    assert rules.per_purchase_cap is None and rules.daily_cap is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1, Fraction(1)),
        ("1.25", Fraction(5, 4)),
        ("4/3", Fraction(4, 3)),
        (1.5, Fraction(3, 2)),
        (Decimal("2.5"), Fraction(5, 2)),
        (" 2 ", Fraction(2)),
        ("0", Fraction(0)),
        (0.1, Fraction(1, 10)),
    ],
)
def test_rates_are_exact(raw: object, expected: Fraction) -> None:
    assert validate_rule_set(changed(("points_per_yuan",), raw)).points_per_yuan == expected


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "$"),
        (without("version"), "version"),
        (without("points_per_yuan"), "points_per_yuan"),
        (changed(("colour",), "red"), "colour"),
        (changed(("version",), 0), "version"),
        (changed(("version",), "3"), "version"),
        (changed(("version",), True), "version"),
        (changed(("points_per_yuan",), -1), "points_per_yuan"),
        (changed(("points_per_yuan",), "-0.5"), "points_per_yuan"),
        (changed(("points_per_yuan",), "abc"), "points_per_yuan"),
        (changed(("points_per_yuan",), "1/0"), "points_per_yuan"),
        (changed(("points_per_yuan",), "1e9999"), "points_per_yuan"),
        (changed(("points_per_yuan",), float("nan")), "points_per_yuan"),
        (changed(("points_per_yuan",), Decimal("Infinity")), "points_per_yuan"),
        (changed(("points_per_yuan",), Decimal("1E+20")), "points_per_yuan"),
        (changed(("points_per_yuan",), 10_001), "points_per_yuan"),
        (changed(("points_per_yuan",), None), "points_per_yuan"),
        (changed(("timezone",), "Mars/Olympus"), "timezone"),
        (changed(("timezone",), "../etc/passwd"), "timezone"),
        (changed(("band_mode",), "monthly"), "band_mode"),
        (changed(("bands",), {"min_fen": 0}), "bands"),
        (changed(("bands", 0, "colour"), 1), "bands[0].colour"),
        (changed(("bands", 0, "min_fen"), -1), "bands[0].min_fen"),
        (changed(("bands", 0, "max_fen"), 100_000), "bands[0].max_fen"),
        (changed(("bands", 1, "min_fen"), 150_000), "bands[1].min_fen"),  # overlap
        (changed(("bands", 1, "min_fen"), 250_000), "bands[1].min_fen"),  # gap
        (changed(("bands", 1, "min_fen"), 50_000), "bands[1].min_fen"),  # unsorted
        (changed(("bands",), [VALID["bands"][2], VALID["bands"][0]]), "bands[1].min_fen"),
        (changed(("bands", 2, "max_fen"), 900_000), "bands[2].max_fen"),  # top band must be open
        (changed(("bands", 2, "multiplier"), "1.2"), "bands[2].multiplier"),  # lower than the band below
        (changed(("bands", 0, "multiplier"), "0.5"), "bands[0].multiplier"),
        (changed(("tier_multipliers", "gold"), "0.99"), "tier_multipliers.gold"),
        (changed(("tier_multipliers", "gold"), 101), "tier_multipliers.gold"),
        (changed(("tier_multipliers", "gold"), [2]), "tier_multipliers.gold"),
        (changed(("tier_multipliers", ""), 2), "tier_multipliers."),
        (changed(("tier_multipliers",), [("gold", 2)]), "tier_multipliers"),
        (changed(("category_multipliers", "wine"), -2), "category_multipliers.wine"),
        (changed(("sku_multipliers", "SKU-1"), "100.5"), "sku_multipliers.SKU-1"),
        (changed(("sku_bonuses", "SKU-2"), -1), "sku_bonuses.SKU-2"),
        (changed(("sku_bonuses", "SKU-2"), "10"), "sku_bonuses.SKU-2"),
        (changed(("promotions", 0, "end"), "2026-12-23"), "promotions[0].end"),
        (changed(("promotions", 0, "start"), "2026-02-30"), "promotions[0].start"),
        (changed(("promotions", 0, "start"), "20261224"), "promotions[0].start"),
        (changed(("promotions", 0, "label"), ""), "promotions[0].label"),
        (changed(("promotions", 0, "multiplier"), "0"), "promotions[0].multiplier"),
        (changed(("promotions", 0, "extra"), 1), "promotions[0].extra"),
        (changed(("promotions", 1, "weekdays"), [5, 7]), "promotions[1].weekdays[1]"),
        (changed(("promotions", 1, "weekdays"), [-1]), "promotions[1].weekdays[0]"),
        (changed(("promotions", 1, "weekdays"), []), "promotions[1].weekdays"),
        (changed(("promotions", 1, "store_codes"), []), "promotions[1].store_codes"),
        (changed(("promotions", 1, "store_codes"), [7]), "promotions[1].store_codes[0]"),
        (changed(("promotions", 1, "code"), "xmas"), "promotions[1].code"),
        (changed(("per_purchase_cap",), -1), "per_purchase_cap"),
        (changed(("daily_cap",), 1.5), "daily_cap"),
    ],
)
def test_invalid_input_names_the_field(raw: object, field: str) -> None:
    with pytest.raises(RuleError) as caught:
        validate_rule_set(raw)
    assert caught.value.field == field
    assert caught.value.message


def test_round_trip_of_the_example() -> None:
    rules = validate_rule_set(VALID)
    assert validate_rule_set(rule_set_to_dict(rules)) == rules


# --- round-trip property over generated valid rule sets -------------------------------------------------

numbers = st.one_of(
    st.integers(1, 100),
    st.decimals(1, 100, places=2).map(str),
    st.fractions(1, 100, max_denominator=12).map(lambda f: f"{f.numerator}/{f.denominator}"),
)
codes = st.text("abcXYZ-_0123", min_size=1, max_size=8)


@st.composite
def raw_bands(draw: st.DrawFn) -> list[dict[str, object]]:
    edges = sorted(draw(st.sets(st.integers(0, 10**9), max_size=5)))
    factors = sorted(
        draw(st.lists(st.fractions(1, 100, max_denominator=1000), min_size=len(edges), max_size=len(edges)))
    )
    bands: list[dict[str, object]] = []
    for index, (low, factor) in enumerate(zip(edges, factors, strict=True)):
        band: dict[str, object] = {"min_fen": low, "multiplier": f"{factor.numerator}/{factor.denominator}"}
        if index + 1 < len(edges):
            band["max_fen"] = edges[index + 1]
        bands.append(band)
    return bands


@st.composite
def raw_promotions(draw: st.DrawFn) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for code in draw(st.lists(codes, max_size=3, unique=True)):
        start = draw(st.dates(date(2020, 1, 1), date(2030, 12, 31)))
        promo: dict[str, object] = {
            "code": code,
            "label": draw(st.sampled_from(["圣诞", "周年庆", "会员日"])),
            "start": start.isoformat(),
            "end": (start + timedelta(days=draw(st.integers(0, 400)))).isoformat(),
            "multiplier": draw(numbers),
        }
        if draw(st.booleans()):
            promo["weekdays"] = draw(st.lists(st.integers(0, 6), min_size=1, max_size=7))
        if draw(st.booleans()):
            promo["store_codes"] = draw(st.lists(codes, min_size=1, max_size=3))
        out.append(promo)
    return out


raw_rule_sets = st.fixed_dictionaries(
    {"version": st.integers(1, 10**6), "points_per_yuan": st.one_of(st.integers(0, 10_000), numbers)},
    optional={
        "timezone": st.sampled_from(["Asia/Shanghai", "UTC", "America/New_York"]),
        "band_mode": st.sampled_from(["per_purchase", "cumulative"]),
        "bands": raw_bands(),
        "tier_multipliers": st.dictionaries(codes, numbers, max_size=3),
        "category_multipliers": st.dictionaries(codes, numbers, max_size=3),
        "sku_multipliers": st.dictionaries(codes, numbers, max_size=3),
        "sku_bonuses": st.dictionaries(codes, st.integers(0, 1_000_000), max_size=3),
        "promotions": raw_promotions(),
        "per_purchase_cap": st.none() | st.integers(0, 10**9),
        "daily_cap": st.none() | st.integers(0, 10**9),
    },
)


@settings(max_examples=200, deadline=None)
@given(raw_rule_sets)
def test_validate_to_dict_validate_round_trips(raw: dict[str, Any]) -> None:
    rules = validate_rule_set(raw)
    rendered = rule_set_to_dict(rules)
    assert validate_rule_set(rendered) == rules
    assert rule_set_to_dict(validate_rule_set(rendered)) == rendered
