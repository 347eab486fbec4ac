"""Stored-value rules: top-up bonus tiers, principal-first payment split, strict validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.rules.errors import RuleError
from handlers.rules.program import Program, program_to_dict, validate_program
from handlers.rules.wallet import (
    BonusTier,
    InsufficientBalance,
    StoredValuePolicy,
    split_payment,
    stored_value_to_dict,
    top_up_bonus,
    validate_stored_value,
)

TIERS = StoredValuePolicy((BonusTier(10_000, 2_000), BonusTier(50_000, 12_000)))


@pytest.mark.parametrize(
    ("amount", "bonus"),
    [(1, 0), (9_999, 0), (10_000, 2_000), (49_999, 2_000), (50_000, 12_000), (10_000_000, 12_000)],
)
def test_the_highest_tier_reached_applies_once(amount: int, bonus: int) -> None:
    assert top_up_bonus(amount, TIERS) == bonus


def test_no_tiers_no_bonus() -> None:
    assert top_up_bonus(1_000_000, StoredValuePolicy()) == 0


@pytest.mark.parametrize(
    ("principal", "bonus", "amount", "split"),
    [
        (5_000, 1_000, 3_000, (3_000, 0)),
        (5_000, 1_000, 5_500, (5_000, 500)),
        (0, 1_000, 1_000, (0, 1_000)),
        (5_000, 1_000, 6_000, (5_000, 1_000)),
    ],
)
def test_payment_spends_principal_first_and_bonus_last(
    principal: int, bonus: int, amount: int, split: tuple[int, int]
) -> None:
    taken = split_payment(principal, bonus, amount)
    assert (taken.principal_fen, taken.bonus_fen) == split


def test_a_short_balance_is_refused_with_the_available_amount() -> None:
    with pytest.raises(InsufficientBalance) as caught:
        split_payment(5_000, 1_000, 6_001)
    assert caught.value.available_fen == 6_000


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(1, 3 * 10**9))
def test_split_never_overdraws_either_part(principal: int, bonus: int, amount: int) -> None:
    try:
        taken = split_payment(principal, bonus, amount)
    except InsufficientBalance:
        assert amount > principal + bonus
        return
    assert taken.total_fen == amount
    assert 0 <= taken.principal_fen <= principal and 0 <= taken.bonus_fen <= bonus
    assert taken.bonus_fen == 0 or taken.principal_fen == principal  # bonus only once principal is gone


@given(
    st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)), max_size=6),
    st.integers(1, 10**7),
    st.integers(1, 10**7),
)
def test_bonus_never_decreases_with_a_larger_top_up(rows: list[tuple[int, int]], a: int, b: int) -> None:
    raw = [{"min_fen": m, "bonus_fen": min(bn, m)} for m, bn in sorted(dict(rows).items())]
    try:
        policy = validate_stored_value({"bonus_tiers": raw})
    except RuleError:
        return  # a generated ladder with a shrinking bonus is refused, tested below
    low, high = sorted((a, b))
    assert 0 <= top_up_bonus(low, policy) <= top_up_bonus(high, policy) <= high
    assert validate_stored_value(stored_value_to_dict(policy)) == policy


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"bonus_tiers": {}}, "bonus_tiers"),
        ({"bonus_tiers": [{"min_fen": 0, "bonus_fen": 1}]}, "bonus_tiers[0].min_fen"),
        ({"bonus_tiers": [{"min_fen": 100, "bonus_fen": 0}]}, "bonus_tiers[0].bonus_fen"),
        ({"bonus_tiers": [{"min_fen": 100, "bonus_fen": 101}]}, "bonus_tiers[0].bonus_fen"),
        ({"bonus_tiers": [{"min_fen": "100", "bonus_fen": 10}]}, "bonus_tiers[0].min_fen"),
        ({"bonus_tiers": [{"min_fen": 100}]}, "bonus_tiers[0].bonus_fen"),
        ({"bonus_tiers": [{"min_fen": 100, "bonus_fen": 10, "x": 1}]}, "bonus_tiers[0].x"),
        (
            {"bonus_tiers": [{"min_fen": 500, "bonus_fen": 10}, {"min_fen": 500, "bonus_fen": 20}]},
            "bonus_tiers[1].min_fen",
        ),
        (
            {"bonus_tiers": [{"min_fen": 500, "bonus_fen": 50}, {"min_fen": 900, "bonus_fen": 40}]},
            "bonus_tiers[1].bonus_fen",
        ),
        ({"bonus_tiers": [{"min_fen": 10**9, "bonus_fen": 1}]}, "bonus_tiers[0].min_fen"),
        ({"tiers": []}, "tiers"),
    ],
)
def test_invalid_bonus_tiers_name_the_field(raw: object, field: str) -> None:
    with pytest.raises(RuleError) as caught:
        validate_stored_value(raw)
    assert caught.value.field == field


def test_program_carries_the_stored_value_section() -> None:
    raw = {
        "stored_value": {
            "bonus_tiers": [{"min_fen": 10_000, "bonus_fen": 2_000}, {"min_fen": 50_000, "bonus_fen": 12_000}]
        }
    }
    program = validate_program(raw)
    assert program.stored_value == TIERS
    assert validate_program(program_to_dict(program)) == program
    assert Program().stored_value == StoredValuePolicy()
    with pytest.raises(RuleError) as caught:
        validate_program({"stored_value": {"bonus_tiers": [{"min_fen": -1, "bonus_fen": 1}]}})
    assert caught.value.field == "stored_value.bonus_tiers[0].min_fen"
