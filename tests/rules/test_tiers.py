from __future__ import annotations

import copy
import dataclasses
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.rules.tiers import (
    Benefits,
    Criteria,
    Downgrade,
    Remaining,
    RuleError,
    Tier,
    WindowStats,
    downgrade_warning,
    due_review,
    evaluate_downgrade,
    evaluate_upgrade,
    next_review,
    progress,
    purchasable_tiers,
    tiers_to_dicts,
    validate_tiers,
)

LADDER_RAW: list[dict[str, Any]] = [
    {"code": "basic", "name": "普通会员", "rank": 0},
    {
        "code": "silver",
        "name": "银卡",
        "rank": 1,
        "criteria": {"window_days": 365, "spend_fen": 100_000, "points_earned": 1_000},
        "benefits": {"discount_percent": 98, "birthday_gift_points": 100},
        "downgrade": {"enabled": True, "every_days": 30, "grace_days": 90},
    },
    {
        "code": "gold",
        "name": "金卡",
        "rank": 2,
        "criteria": {"window_days": 365, "spend_fen": 500_000, "recharge_fen": 300_000},
        "benefits": {
            "discount_percent": 95,
            "points_multiplier": "1.5",
            "upgrade_gift_points": 500,
            "upgrade_gift_coupon_template_ids": [11, 12],
        },
        "downgrade": {"enabled": True, "every_days": 365, "grace_days": 30},
    },
    {"code": "diamond", "name": "钻石卡", "rank": 3, "upgrade_cost_points": 50_000},
]
LADDER = validate_tiers(LADDER_RAW)
SINCE = date(2026, 1, 1)


def stats(spend_yuan: int = 0, recharge_yuan: int = 0, points: int = 0) -> WindowStats:
    return WindowStats(spend_fen=spend_yuan * 100, recharge_fen=recharge_yuan * 100, points_earned=points)


def test_ladder_parses_into_typed_tiers() -> None:
    gold = LADDER[2]
    assert gold.criteria == Criteria(365, spend_fen=500_000, recharge_fen=300_000)
    assert gold.benefits == Benefits(95, Fraction(3, 2), 0, 500, (11, 12))
    assert gold.downgrade == Downgrade(True, 365, 30, warn_days=7)  # warned a week ahead unless set
    assert LADDER[0] == Tier("basic", "普通会员", 0)
    assert tiers_to_dicts(validate_tiers(tiers_to_dicts(LADDER))) == tiers_to_dicts(LADDER)
    assert validate_tiers(tiers_to_dicts(LADDER)) == LADDER


@pytest.mark.parametrize(
    ("current", "window", "expected"),
    [
        ("basic", stats(), None),
        ("basic", stats(spend_yuan=999), None),
        ("basic", stats(spend_yuan=1_000), "silver"),
        ("basic", stats(points=1_000), "silver"),
        ("basic", stats(spend_yuan=5_000), "gold"),  # skips silver
        ("basic", stats(recharge_yuan=3_000), "gold"),
        ("silver", stats(spend_yuan=1_000), None),
        ("silver", stats(recharge_yuan=3_000), "gold"),
        ("gold", stats(spend_yuan=10**6, points=10**6), None),  # diamond is bought, never earned
        ("diamond", stats(spend_yuan=10**6), None),
    ],
)
def test_evaluate_upgrade(current: str, window: WindowStats, expected: str | None) -> None:
    result = evaluate_upgrade(LADDER, current, window)
    assert (result.code if result else None) == expected


def test_unknown_current_tier_is_a_rule_error() -> None:
    with pytest.raises(RuleError) as caught:
        evaluate_upgrade(LADDER, "platinum", stats())
    assert caught.value.field == "current_code"


@pytest.mark.parametrize(
    ("current", "window", "today", "last_review", "expected"),
    [
        ("silver", stats(), date(2026, 1, 31), None, None),  # review day 30, but inside the 90-day grace
        ("silver", stats(), date(2026, 3, 31), None, None),  # day 89: still grace
        ("silver", stats(), date(2026, 4, 1), None, "basic"),  # day 90: review, fails
        ("silver", stats(points=1_000), date(2026, 4, 1), None, None),  # still qualifies
        ("silver", stats(), date(2026, 4, 5), None, "basic"),  # missed run catches up
        ("silver", stats(), date(2026, 4, 5), date(2026, 4, 1), None),  # that review is already done
        ("silver", stats(), date(2026, 5, 1), date(2026, 4, 1), "basic"),  # next review (day 120)
        ("silver", stats(), date(2025, 12, 1), None, None),  # before tier_since
        ("gold", stats(spend_yuan=1_000), date(2027, 1, 1), None, "silver"),
        ("gold", stats(), date(2027, 1, 1), None, "basic"),
        ("gold", stats(), date(2026, 12, 31), None, None),  # first yearly review not reached
        ("basic", stats(), date(2030, 1, 1), None, None),
        ("diamond", stats(), date(2030, 1, 1), None, None),  # downgrade disabled
    ],
)
def test_evaluate_downgrade(
    current: str, window: WindowStats, today: date, last_review: date | None, expected: str | None
) -> None:
    result = evaluate_downgrade(LADDER, current, window, SINCE, today, last_review=last_review)
    assert (result.code if result else None) == expected


def test_due_review_names_the_review_date() -> None:
    assert due_review(LADDER[1], SINCE, date(2026, 4, 20)) == date(2026, 4, 1)
    assert due_review(LADDER[1], SINCE, date(2026, 5, 1)) == date(2026, 5, 1)


@pytest.mark.parametrize(
    ("current", "today", "last_review", "expected"),
    [
        ("silver", date(2026, 1, 15), None, date(2026, 4, 1)),  # reviews on day 30 and 60 fall in grace
        ("silver", date(2026, 4, 1), None, date(2026, 4, 1)),  # today's, not yet done
        ("silver", date(2026, 4, 1), date(2026, 4, 1), date(2026, 5, 1)),  # today's is done
        ("silver", date(2026, 4, 2), None, date(2026, 5, 1)),  # a missed one is `due_review`'s
        ("gold", date(2026, 6, 1), None, date(2027, 1, 1)),
        ("basic", date(2026, 6, 1), None, None),
        ("diamond", date(2026, 6, 1), None, None),  # downgrade disabled
    ],
)
def test_next_review(current: str, today: date, last_review: date | None, expected: date | None) -> None:
    tier = next(t for t in LADDER if t.code == current)
    assert next_review(tier, SINCE, today, last_review) == expected


@pytest.mark.parametrize(
    ("current", "window", "warning"),
    [
        ("silver", stats(), "再消费 1000 元或再获得 1000 积分即可保级"),
        (
            "silver",
            WindowStats(spend_fen=67_950, points_earned=999),
            "再消费 320.50 元或再获得 1 积分即可保级",
        ),
        ("silver", stats(points=1_000), None),  # keeps the tier: no warning
        ("gold", stats(spend_yuan=4_800), "再消费 200 元或再充值 3000 元即可保级"),
        ("gold", stats(recharge_yuan=3_000), None),
    ],
)
def test_downgrade_warning_is_the_gap_to_keep_the_tier(
    current: str, window: WindowStats, warning: str | None
) -> None:
    tier = next(t for t in LADDER if t.code == current)
    review = next_review(tier, SINCE, date(2026, 3, 28))
    assert review is not None
    assert downgrade_warning(LADDER, current, window, SINCE, review) == warning
    assert downgrade_warning(LADDER, current, window, SINCE, review, last_review=review) is None  # done


def test_a_bought_tier_is_warned_where_it_goes() -> None:
    raw = copy.deepcopy(LADDER_RAW)
    raw[3]["downgrade"] = {"enabled": True, "every_days": 30}
    ladder = validate_tiers(raw)
    warning = downgrade_warning(ladder, "diamond", stats(spend_yuan=6_000), SINCE, date(2026, 1, 31))
    assert warning == "复核后将调整为金卡"


@pytest.mark.parametrize(
    ("current", "window", "message"),
    [
        ("basic", stats(spend_yuan=680), "再消费 320 元或再获得 1000 积分即可在 2027-03-01 前升级为银卡"),
        (
            "basic",
            WindowStats(spend_fen=67_950, points_earned=999),
            "再消费 320.50 元或再获得 1 积分即可在 2027-03-01 前升级为银卡",
        ),
        (
            "silver",
            stats(spend_yuan=4_000, recharge_yuan=2_999),
            "再消费 1000 元或再充值 1 元即可在 2027-03-01 前升级为金卡",
        ),
        ("basic", stats(points=5_000), "已满足升级为银卡的条件"),
    ],
)
def test_progress_sentence(current: str, window: WindowStats, message: str) -> None:
    result = progress(LADDER, current, window, date(2027, 3, 1))
    assert result is not None
    assert result.message == message
    assert result.deadline == date(2027, 3, 1)


def test_progress_reports_the_smallest_remaining_amount_per_criterion() -> None:
    result = progress(LADDER, "basic", stats(spend_yuan=680, recharge_yuan=100), date(2027, 3, 1))
    assert result is not None
    assert result.next_tier.code == "silver"
    assert result.remaining == (
        Remaining("spend_fen", 32_000, "silver"),
        Remaining("recharge_fen", 290_000, "gold"),  # silver has no recharge threshold
        Remaining("points_earned", 1_000, "silver"),
    )


def test_progress_at_the_top_is_none() -> None:
    assert progress(LADDER, "gold", stats(), date(2027, 3, 1)) is None


def test_purchasable_tiers() -> None:
    assert [t.code for t in purchasable_tiers(LADDER, "basic")] == ["diamond"]
    assert purchasable_tiers(LADDER, "diamond") == []


def changed(index: int, path: tuple[str, ...], value: object) -> list[dict[str, Any]]:
    raw = copy.deepcopy(LADDER_RAW)
    target: Any = raw[index]
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({}, "tiers"),
        ([], "tiers"),
        ([1], "tiers[0]"),
        (changed(0, ("rank",), 1), "tiers[0].rank"),
        (changed(0, ("criteria",), {"window_days": 30, "spend_fen": 1}), "tiers[0].criteria"),
        (changed(0, ("upgrade_cost_points",), 10), "tiers[0].upgrade_cost_points"),
        (changed(0, ("downgrade", "enabled"), True), "tiers[0].downgrade.enabled"),
        (changed(2, ("rank",), 1), "tiers[2].rank"),
        (changed(2, ("code",), "silver"), "tiers[2].code"),
        (changed(2, ("code",), ""), "tiers[2].code"),
        (changed(2, ("colour",), "gold"), "tiers[2].colour"),
        (changed(2, ("criteria",), None), "tiers[2].criteria"),
        (changed(2, ("criteria",), {"window_days": 365}), "tiers[2].criteria"),
        (changed(2, ("criteria", "window_days"), 180), "tiers[2].criteria.window_days"),
        (changed(2, ("criteria", "window_days"), 0), "tiers[2].criteria.window_days"),
        (changed(2, ("criteria", "spend_fen"), 99_999), "tiers[2].criteria.spend_fen"),
        (changed(2, ("criteria", "spend_fen"), -5), "tiers[2].criteria.spend_fen"),
        (changed(2, ("criteria", "points_earned"), 999), "tiers[2].criteria.points_earned"),
        (changed(2, ("criteria", "balance"), 10), "tiers[2].criteria.balance"),
        (changed(2, ("benefits", "discount_percent"), 0), "tiers[2].benefits.discount_percent"),
        (changed(2, ("benefits", "discount_percent"), 101), "tiers[2].benefits.discount_percent"),
        (changed(2, ("benefits", "discount_percent"), 9.5), "tiers[2].benefits.discount_percent"),
        (changed(2, ("benefits", "points_multiplier"), "0.5"), "tiers[2].benefits.points_multiplier"),
        (changed(2, ("benefits", "birthday_gift_points"), -1), "tiers[2].benefits.birthday_gift_points"),
        (
            changed(2, ("benefits", "upgrade_gift_coupon_template_ids"), [1, 1]),
            "tiers[2].benefits.upgrade_gift_coupon_template_ids",
        ),
        (
            changed(2, ("benefits", "upgrade_gift_coupon_template_ids"), [0]),
            "tiers[2].benefits.upgrade_gift_coupon_template_ids[0]",
        ),
        (changed(2, ("downgrade", "enabled"), "yes"), "tiers[2].downgrade.enabled"),
        (changed(2, ("downgrade", "every_days"), 0), "tiers[2].downgrade.every_days"),
        (changed(2, ("downgrade", "grace_days"), -1), "tiers[2].downgrade.grace_days"),
        (changed(2, ("downgrade", "warn_days"), 91), "tiers[2].downgrade.warn_days"),
        (changed(2, ("downgrade", "warn_days"), -1), "tiers[2].downgrade.warn_days"),
        (changed(3, ("upgrade_cost_points",), None), "tiers[3].criteria"),
        (changed(3, ("upgrade_cost_points",), 0), "tiers[3].upgrade_cost_points"),
    ],
)
def test_invalid_tiers_name_the_field(raw: object, field: str) -> None:
    with pytest.raises(RuleError) as caught:
        validate_tiers(raw)
    assert caught.value.field == field


# --- properties ---------------------------------------------------------------------------------------


@st.composite
def ladders(draw: st.DrawFn) -> list[dict[str, Any]]:
    raw: list[dict[str, Any]] = [{"code": "t0", "name": "基础", "rank": 0}]
    floors = {"spend_fen": 0, "recharge_fen": 0, "points_earned": 0}
    rank = 0
    for index in range(1, draw(st.integers(1, 5))):
        metrics = draw(st.sets(st.sampled_from(sorted(floors)), min_size=1))
        criteria: dict[str, int] = {"window_days": 365}
        for metric in sorted(metrics):
            floors[metric] = draw(st.integers(max(floors[metric], 1), floors[metric] + 100_000))
            criteria[metric] = floors[metric]
        rank += draw(st.integers(1, 3))
        raw.append(
            {
                "code": f"t{index}",
                "name": f"等级{index}",
                "rank": rank,
                "criteria": criteria,
                "downgrade": {
                    "enabled": True,
                    "every_days": draw(st.integers(1, 400)),
                    "grace_days": draw(st.integers(0, 400)),
                },
            }
        )
    return raw


amounts = st.integers(0, 600_000)
window_stats = st.builds(WindowStats, amounts, amounts, amounts)


@settings(max_examples=200, deadline=None)
@given(ladders(), window_stats, window_stats, st.integers(0, 4))
def test_upgrade_is_monotone_in_stats(
    raw: list[dict[str, Any]], a: WindowStats, b: WindowStats, pick: int
) -> None:
    tiers = validate_tiers(raw)
    current = tiers[pick % len(tiers)]
    pairs = list(zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True))
    low = WindowStats(*(min(pair) for pair in pairs))
    high = WindowStats(*(max(pair) for pair in pairs))
    low_result = evaluate_upgrade(tiers, current.code, low) or current
    high_result = evaluate_upgrade(tiers, current.code, high) or current
    assert low_result.rank <= high_result.rank
    assert high_result is current or high_result.qualifies(high)
    assert validate_tiers(tiers_to_dicts(tiers)) == tiers


@settings(max_examples=200, deadline=None)
@given(
    ladders(),
    window_stats,
    st.integers(0, 4),
    st.dates(date(2020, 1, 1), date(2030, 1, 1)),
    st.integers(-30, 2_000),
    st.none() | st.integers(-30, 2_000),
)
def test_downgrade_never_happens_inside_grace(
    raw: list[dict[str, Any]],
    window: WindowStats,
    pick: int,
    since: date,
    age_days: int,
    reviewed_days: int | None,
) -> None:
    tiers = validate_tiers(raw)
    current = tiers[pick % len(tiers)]
    today = since + timedelta(days=age_days)
    last_review = None if reviewed_days is None else since + timedelta(days=reviewed_days)
    result = evaluate_downgrade(tiers, current.code, window, since, today, last_review=last_review)
    if age_days < current.downgrade.grace_days or age_days < current.downgrade.every_days:
        assert result is None
    if result is not None:
        assert result.rank < current.rank
        assert result.qualifies(window)
        assert not current.qualifies(window)


@settings(max_examples=200, deadline=None)
@given(
    ladders(),
    st.integers(1, 4),
    st.dates(date(2020, 1, 1), date(2030, 1, 1)),
    st.integers(-30, 1_000),
    st.none() | st.integers(-30, 1_000),
)
def test_next_review_is_the_first_review_the_review_job_will_hold(
    raw: list[dict[str, Any]], pick: int, since: date, age_days: int, reviewed_days: int | None
) -> None:
    tiers = validate_tiers(raw)
    tier = tiers[pick % len(tiers)]
    today = since + timedelta(days=age_days)
    last_review = None if reviewed_days is None else since + timedelta(days=reviewed_days)
    review = next_review(tier, since, today, last_review)
    if tier.rank == 0:
        assert review is None
        return
    assert review is not None and review >= today
    assert due_review(tier, since, review, last_review) == review
    for days in range((review - today).days):
        held = due_review(tier, since, today + timedelta(days=days), last_review)
        assert held is None or held < today  # nothing between today and it, only a missed earlier one
