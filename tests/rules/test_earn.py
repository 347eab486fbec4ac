from __future__ import annotations

import dataclasses
import random
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.rules.earn import (
    Band,
    BreakdownLine,
    EarnResult,
    Item,
    MemberInfo,
    Promotion,
    Purchase,
    RuleSet,
    best_promotion,
    compute_earn,
    points_to_fen,
)

NOON_UTC = datetime(2026, 6, 10, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai, a Wednesday
YUAN = 100
EXAMPLE_BANDS = (  # 1,000–2,000 yuan 1x, 2,000–5,000 1.5x, >5,000 2x
    Band(1_000 * YUAN, 2_000 * YUAN, Fraction(1)),
    Band(2_000 * YUAN, 5_000 * YUAN, Fraction(3, 2)),
    Band(5_000 * YUAN, None, Fraction(2)),
)


def rules(**changes: object) -> RuleSet:
    base = RuleSet(version=7, points_per_yuan=Fraction(1))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def buy(amount_fen: int, *items: Item, store: str = "S1", at: datetime = NOON_UTC) -> Purchase:
    return Purchase(amount_fen=amount_fen, items=items, store_code=store, at=at)


def promo(code: str, start: str, end: str, multiplier: int | Fraction, **extra: object) -> Promotion:
    return Promotion(
        code,
        "圣诞" if code == "xmas" else code,
        date.fromisoformat(start),
        date.fromisoformat(end),
        Fraction(multiplier),
        **extra,
    )  # type: ignore[arg-type]


def earn(
    purchase: Purchase, rule_set: RuleSet, member: MemberInfo | None = None, pool: int | None = None
) -> EarnResult:
    return compute_earn(purchase, member or MemberInfo("basic"), rule_set, pool_remaining=pool)


def codes(result: EarnResult) -> dict[str, int]:
    return {line.code: line.points for line in result.breakdown}


@pytest.mark.parametrize(
    ("rate", "amount_fen", "expected"),
    [
        (Fraction(1), 12_345, 123),
        (Fraction(3, 2), 12_345, 185),
        (Fraction(0), 99_999, 0),
        (Fraction(1, 3), 10_000, 33),
        (Fraction(10), 1, 0),
        (Fraction(10), 10, 1),
        (Fraction(1), 0, 0),
    ],
)
def test_base_points_are_amount_times_rate_floored(rate: Fraction, amount_fen: int, expected: int) -> None:
    result = earn(buy(amount_fen), rules(points_per_yuan=rate))
    assert result.points == expected
    assert result.breakdown == (BreakdownLine("base", "基础积分", expected),)
    assert result.rule_set_version == 7


@pytest.mark.parametrize(
    ("items", "amount_fen", "expected"),
    [
        # Two equal items, one wine (×2): half of 100 base points doubles.
        (
            (Item("A", "wine", 1, 5_000), Item("B", "food", 1, 5_000)),
            10_000,
            {"base": 100, "category:wine": 50},
        ),
        # The SKU rule wins over the category rule; they never stack.
        ((Item("W1", "wine", 1, 10_000),), 10_000, {"base": 100, "sku:W1": 200}),
        # Paid less than list price (discount): the paid amount is split pro-rata.
        (
            (Item("A", "wine", 2, 2_500), Item("B", "food", 1, 5_000)),
            8_000,
            {"base": 80, "category:wine": 40},
        ),
        # Items worth nothing: nothing to weight by, so no item rule applies.
        ((Item("A", "wine", 1, 0),), 10_000, {"base": 100}),
        ((), 10_000, {"base": 100}),
    ],
)
def test_item_multipliers_split_pro_rata(
    items: tuple[Item, ...], amount_fen: int, expected: dict[str, int]
) -> None:
    rule_set = rules(category_multipliers={"wine": Fraction(2)}, sku_multipliers={"W1": Fraction(3)})
    result = earn(buy(amount_fen, *items), rule_set)
    assert codes(result) == expected
    assert result.points == sum(expected.values())


def test_item_lines_are_labelled_and_ordered_categories_then_skus() -> None:
    rule_set = rules(
        category_multipliers={"wine": Fraction(3, 2), "food": Fraction(2)},
        sku_multipliers={"Z": Fraction(4, 3)},
    )
    items = (Item("Z", "misc", 1, 3_000), Item("A", "wine", 1, 4_000), Item("B", "food", 1, 3_000))
    result = earn(buy(10_000, *items), rule_set)
    assert [(line.code, line.label) for line in result.breakdown] == [
        ("base", "基础积分"),
        ("category:food", "品类 food 2 倍"),
        ("category:wine", "品类 wine 1.5 倍"),
        ("sku:Z", "商品 Z 1.33 倍"),
    ]
    # 100 + 30 + 20 + 10 exactly.
    assert result.points == 160


@pytest.mark.parametrize(
    ("amount_yuan", "expected"),
    [
        (999, 999),
        (1_000, 1_000),
        (1_999, 1_999),
        (2_000, 3_000),
        (4_999, 7_498),
        (5_000, 10_000),
        (6_000, 12_000),
    ],
)
def test_per_purchase_band_applies_to_the_whole_purchase(amount_yuan: int, expected: int) -> None:
    result = earn(buy(amount_yuan * YUAN), rules(bands=EXAMPLE_BANDS))
    assert result.points == expected


def test_per_purchase_band_label_names_its_threshold() -> None:
    result = earn(buy(3_000 * YUAN), rules(bands=EXAMPLE_BANDS))
    assert result.breakdown[1] == BreakdownLine("band", "消费满 2000 元 1.5 倍", 1_500)
    from_zero = (Band(0, None, Fraction(6, 5)),)
    from_zero_result = earn(buy(100 * YUAN), rules(bands=from_zero))
    assert from_zero_result.breakdown[1] == BreakdownLine("band", "消费档位 1.2 倍", 20)


@pytest.mark.parametrize(
    ("period_spend_yuan", "amount_yuan", "expected"),
    [
        (0, 500, 500),  # below every band
        (1_500, 1_000, 500 + 750),  # 500 at 1x, 500 at 1.5x
        (4_000, 2_000, 1_500 + 2_000),  # 1,000 at 1.5x, 1,000 at 2x
        (0, 6_000, 1_000 + 1_000 + 4_500 + 2_000),  # crosses all bands
        (10_000, 100, 200),
    ],
)
def test_cumulative_bands_weight_each_part_of_the_purchase(
    period_spend_yuan: int, amount_yuan: int, expected: int
) -> None:
    member = MemberInfo("basic", period_spend_fen=period_spend_yuan * YUAN)
    result = earn(buy(amount_yuan * YUAN), rules(bands=EXAMPLE_BANDS, band_mode="cumulative"), member)
    assert result.points == expected


@pytest.mark.parametrize(
    ("member", "expected_points", "expected_line"),
    [
        (MemberInfo("gold", tier_name="金卡"), 150, BreakdownLine("tier:gold", "金卡 1.5 倍", 50)),
        (MemberInfo("gold"), 150, BreakdownLine("tier:gold", "gold 1.5 倍", 50)),
        (MemberInfo("silver", tier_name="银卡"), 100, None),
    ],
)
def test_tier_multiplier(
    member: MemberInfo, expected_points: int, expected_line: BreakdownLine | None
) -> None:
    result = earn(buy(10_000), rules(tier_multipliers={"gold": Fraction(3, 2)}), member)
    assert result.points == expected_points
    assert (result.breakdown[1:] or (None,))[0] == expected_line


@pytest.mark.parametrize(
    ("at", "store", "applies"),
    [
        (datetime(2026, 12, 24, 4, 0, tzinfo=UTC), "S1", True),
        (datetime(2026, 12, 26, 15, 59, tzinfo=UTC), "S1", True),  # 23:59 on the last day, Shanghai time
        (datetime(2026, 12, 26, 16, 0, tzinfo=UTC), "S1", False),  # 00:00 the day after
        (datetime(2026, 12, 23, 16, 0, tzinfo=UTC), "S1", True),  # 00:00 on the first day
        (datetime(2026, 12, 23, 15, 59, tzinfo=UTC), "S1", False),
        (datetime(2026, 12, 24, 4, 0, tzinfo=UTC), "S9", False),  # other store
    ],
)
def test_promotion_dates_are_inclusive_in_merchant_local_time(
    at: datetime, store: str, applies: bool
) -> None:
    rule_set = rules(
        promotions=(promo("xmas", "2026-12-24", "2026-12-26", 3, store_codes=frozenset({"S1", "S2"})),)
    )
    result = earn(buy(10_000, store=store, at=at), rule_set)
    assert result.points == (300 if applies else 100)
    if applies:
        assert result.breakdown[-1] == BreakdownLine("promo:xmas", "圣诞 3 倍", 200)


@pytest.mark.parametrize(
    ("day", "applies"), [(date(2026, 6, 13), True), (date(2026, 6, 14), True), (date(2026, 6, 15), False)]
)
def test_promotion_weekdays(day: date, applies: bool) -> None:
    weekend = promo("weekend", "2026-01-01", "2026-12-31", 2, weekdays=frozenset({5, 6}))
    at = datetime(day.year, day.month, day.day, 4, tzinfo=UTC)
    assert earn(buy(10_000, at=at), rules(promotions=(weekend,))).points == (200 if applies else 100)


@pytest.mark.parametrize(
    ("promotions", "winner"),
    [
        ((promo("a", "2026-06-01", "2026-06-30", 2), promo("b", "2026-06-05", "2026-06-30", 3)), "b"),
        (
            (promo("late", "2026-06-05", "2026-06-30", 2), promo("early", "2026-06-01", "2026-06-30", 2)),
            "early",
        ),
        ((promo("y", "2026-06-01", "2026-06-30", 2), promo("x", "2026-06-01", "2026-06-30", 2)), "x"),
        ((promo("over", "2026-05-01", "2026-05-31", 9),), None),
    ],
)
def test_promotions_do_not_stack_best_wins(promotions: tuple[Promotion, ...], winner: str | None) -> None:
    rule_set = rules(promotions=promotions)
    chosen = best_promotion(buy(10_000), rule_set)
    assert (chosen.code if chosen else None) == winner
    multiplier = chosen.multiplier if chosen else 1
    assert earn(buy(10_000), rule_set).points == 100 * multiplier


def test_sku_bonus_is_per_unit_and_added_after_the_floor() -> None:
    rule_set = rules(sku_bonuses={"X": 5, "Y": 0}, tier_multipliers={"gold": Fraction(2)})
    items = (Item("X", "food", 3, 100), Item("Y", "food", 1, 100), Item("X", "food", 1, 100))
    result = earn(buy(0, *items), rule_set, MemberInfo("gold"))
    assert result.points == 20  # bonuses are not multiplied by the tier
    assert result.breakdown[-1] == BreakdownLine("bonus:X", "商品 X 奖励", 20)


@pytest.mark.parametrize(
    ("per_purchase", "daily", "today", "pool", "expected", "cap_lines"),
    [
        (None, None, 0, None, 500, {}),
        (300, None, 0, None, 300, {"cap:purchase": -200}),
        (None, 1_000, 800, None, 200, {"cap:daily": -300}),
        (None, 1_000, 1_200, None, 0, {"cap:daily": -500}),
        (None, None, 0, 50, 50, {"cap:pool": -450}),
        (None, None, 0, -5, 0, {"cap:pool": -500}),
        (400, 1_000, 700, 100, 100, {"cap:purchase": -100, "cap:daily": -100, "cap:pool": -200}),
        (600, 1_000, 0, 1_000, 500, {}),
    ],
)
def test_caps_apply_in_order(
    per_purchase: int | None,
    daily: int | None,
    today: int,
    pool: int | None,
    expected: int,
    cap_lines: dict[str, int],
) -> None:
    rule_set = rules(per_purchase_cap=per_purchase, daily_cap=daily)
    result = earn(buy(50_000), rule_set, MemberInfo("basic", points_today=today), pool)
    assert result.points == expected
    assert {k: v for k, v in codes(result).items() if k.startswith("cap:")} == cap_lines
    labels = {"cap:purchase": "单笔上限", "cap:daily": "每日上限", "cap:pool": "活动积分池"}
    assert all(labels[line.code] == line.label for line in result.breakdown if line.code.startswith("cap:"))


def test_combination_order_end_to_end() -> None:
    rule_set = rules(
        bands=(
            Band(0, 100_000, Fraction(1)),
            Band(100_000, 200_000, Fraction(3, 2)),
            Band(200_000, None, Fraction(2)),
        ),
        tier_multipliers={"gold": Fraction(3, 2)},
        category_multipliers={"wine": Fraction(4, 3)},
        sku_bonuses={"X": 5},
        promotions=(promo("xmas", "2026-12-24", "2026-12-26", 3),),
    )
    items = (Item("X", "food", 2, 50_000), Item("Y", "wine", 1, 60_000))
    purchase = buy(150_050, *items, at=datetime(2026, 12, 24, 10, tzinfo=UTC))
    result = earn(purchase, rule_set, MemberInfo("gold", tier_name="金卡"))
    # 1500.5 → +wine 187.5625 → ×1.5 → ×1.5 → ×3 = 11394.42…, floored once, then +10 bonus.
    assert result.breakdown == (
        BreakdownLine("base", "基础积分", 1_500),
        BreakdownLine("category:wine", "品类 wine 1.33 倍", 188),
        BreakdownLine("band", "消费满 1000 元 1.5 倍", 844),
        BreakdownLine("tier:gold", "金卡 1.5 倍", 1_266),
        BreakdownLine("promo:xmas", "圣诞 3 倍", 7_596),
        BreakdownLine("bonus:X", "商品 X 奖励", 10),
    )
    assert result.points == 11_404


def test_floor_happens_once_not_per_step() -> None:
    result = earn(buy(199), rules(tier_multipliers={"gold": Fraction(3, 2)}), MemberInfo("gold"))
    assert result.points == 2  # floor(1.99 × 1.5) — flooring 1.99 first would give 1
    assert codes(result) == {"base": 1, "tier:gold": 1}


@pytest.mark.parametrize(
    ("points", "per_yuan", "fen"),
    [(0, 100, 0), (100, 100, 100), (1, 100, 1), (1, 200, 1), (1, 300, 0), (150, 10, 1_500)],
)
def test_points_to_fen(points: int, per_yuan: int, fen: int) -> None:
    assert points_to_fen(points, per_yuan) == fen


@pytest.mark.parametrize(("points", "per_yuan"), [(-1, 100), (1, 0)])
def test_points_to_fen_rejects_nonsense(points: int, per_yuan: int) -> None:
    with pytest.raises(ValueError):
        points_to_fen(points, per_yuan)


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError):
        buy(100, at=datetime(2026, 1, 1))  # naive
    with pytest.raises(ValueError):
        buy(-1)
    with pytest.raises(ValueError):
        Item("A", "c", 0, 100)


# --- properties ---------------------------------------------------------------------------------------

multipliers = st.fractions(min_value=1, max_value=5, max_denominator=8)
skus = st.sampled_from(["A", "B", "C"])
items_st = st.lists(
    st.builds(Item, skus, st.sampled_from(["wine", "food"]), st.integers(1, 5), st.integers(0, 100_000)),
    max_size=4,
).map(tuple)


@st.composite
def bands_st(draw: st.DrawFn) -> tuple[Band, ...]:
    edges = sorted(draw(st.sets(st.integers(0, 2_000_000), max_size=4)))
    factors = sorted(draw(st.lists(multipliers, min_size=len(edges), max_size=len(edges))))
    tops: list[int | None] = [*edges[1:], None][: len(edges)]
    return tuple(Band(low, top, factor) for low, top, factor in zip(edges, tops, factors, strict=True))


@st.composite
def rule_sets(draw: st.DrawFn) -> RuleSet:
    start = draw(st.dates(date(2026, 1, 1), date(2026, 12, 31)))
    promotions = tuple(
        Promotion(
            f"p{i}",
            "活动",
            start,
            start + timedelta(days=draw(st.integers(0, 60))),
            draw(multipliers),
            draw(st.none() | st.frozensets(st.integers(0, 6), min_size=1)),
            draw(st.none() | st.just(frozenset({"S1"}))),
        )
        for i in range(draw(st.integers(0, 2)))
    )
    caps = st.none() | st.integers(0, 50_000)
    return RuleSet(
        version=draw(st.integers(1, 99)),
        points_per_yuan=draw(st.fractions(min_value=0, max_value=20, max_denominator=10)),
        band_mode=draw(st.sampled_from(["per_purchase", "cumulative"])),
        bands=draw(bands_st()),
        tier_multipliers=MappingProxyType(
            draw(st.dictionaries(st.sampled_from(["gold", "silver"]), multipliers))
        ),
        category_multipliers=MappingProxyType(draw(st.dictionaries(st.sampled_from(["wine"]), multipliers))),
        sku_multipliers=MappingProxyType(draw(st.dictionaries(skus, multipliers))),
        sku_bonuses=MappingProxyType(draw(st.dictionaries(skus, st.integers(0, 50)))),
        promotions=promotions,
        per_purchase_cap=draw(caps),
        daily_cap=draw(caps),
    )


members = st.builds(
    MemberInfo,
    st.sampled_from(["gold", "silver", "basic"]),
    st.integers(0, 3_000_000),
    st.integers(0, 60_000),
)
moments = st.datetimes(datetime(2026, 1, 1), datetime(2027, 1, 1), timezones=st.just(UTC))
pools = st.none() | st.integers(-10, 100_000)


@settings(max_examples=200, deadline=None)
@given(
    rule_sets(), st.integers(0, 5_000_000), items_st, members, moments, st.sampled_from(["S1", "S2"]), pools
)
def test_breakdown_sums_to_a_capped_non_negative_total(
    rule_set: RuleSet,
    amount: int,
    items: tuple[Item, ...],
    member: MemberInfo,
    at: datetime,
    store: str,
    pool: int | None,
) -> None:
    result = earn(buy(amount, *items, store=store, at=at), rule_set, member, pool)
    assert result.points == sum(line.points for line in result.breakdown)
    assert result.points >= 0
    assert all(line.points >= 0 for line in result.breakdown if not line.code.startswith("cap:"))
    assert rule_set.per_purchase_cap is None or result.points <= rule_set.per_purchase_cap
    assert rule_set.daily_cap is None or result.points <= max(0, rule_set.daily_cap - member.points_today)
    assert pool is None or result.points <= max(0, pool)
    assert result.rule_set_version == rule_set.version


@settings(max_examples=200, deadline=None)
@given(rule_sets(), st.integers(0, 5_000_000), st.integers(0, 5_000_000), items_st, members, moments, pools)
def test_points_never_decrease_as_the_amount_grows(
    rule_set: RuleSet,
    a: int,
    b: int,
    items: tuple[Item, ...],
    member: MemberInfo,
    at: datetime,
    pool: int | None,
) -> None:
    low, high = sorted((a, b))
    assert (
        earn(buy(low, *items, at=at), rule_set, member, pool).points
        <= earn(buy(high, *items, at=at), rule_set, member, pool).points
    )


@settings(max_examples=100, deadline=None)
@given(rule_sets(), st.integers(0, 5_000_000), items_st, members, st.randoms(use_true_random=False))
def test_item_order_does_not_change_the_total(
    rule_set: RuleSet, amount: int, items: tuple[Item, ...], member: MemberInfo, rnd: random.Random
) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    original = earn(buy(amount, *items), rule_set, member)
    assert original.points == earn(buy(amount, *shuffled), rule_set, member).points
