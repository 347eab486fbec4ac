from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.rules.errors import RuleError
from handlers.rules.program import OffsetPolicy
from handlers.rules.till import max_offset_points, price

POLICY = OffsetPolicy(enabled=True, min_points=100, max_percent=50, points_per_yuan=100)


def test_discount_then_offset() -> None:
    quote = price(10_000, 95, 2_000, POLICY)  # 100 yuan, 9.5折, 2,000 points = 20 yuan
    assert (quote.discount_fen, quote.offset_fen, quote.paid_fen) == (500, 2_000, 7_500)


def test_discount_rounds_in_members_favour() -> None:
    assert price(999, 95, 0, POLICY).paid_fen == 949  # 949.05 → 949


@pytest.mark.parametrize(("points", "field_message"), [(50, "最少"), (6_000, "最多抵扣")])
def test_offset_limits(points: int, field_message: str) -> None:
    with pytest.raises(RuleError) as caught:
        price(10_000, 100, points, POLICY)
    assert caught.value.field == "points_offset" and field_message in caught.value.message


def test_offset_disabled() -> None:
    with pytest.raises(RuleError):
        price(10_000, 100, 100, OffsetPolicy(enabled=False))


@given(st.integers(0, 10**9), st.integers(1, 100))
def test_paid_plus_discount_plus_offset_is_amount(amount: int, percent: int) -> None:
    payable = amount * percent // 100
    points = max_offset_points(payable, POLICY)
    quote = price(amount, percent, points, POLICY)
    assert quote.paid_fen + quote.discount_fen + quote.offset_fen == amount
    assert quote.paid_fen >= 0 and quote.offset_fen <= payable // 2


def test_coupon_comes_off_the_discounted_amount_before_the_offset_cap() -> None:
    quote = price(10_000, 90, 2_000, POLICY, coupon_fen=2_000)  # 90 yuan after 9折, 满减 20, 20 yuan points
    parts = (quote.discount_fen, quote.coupon_fen, quote.offset_fen, quote.paid_fen)
    assert parts == (1_000, 2_000, 2_000, 5_000)
    with pytest.raises(RuleError) as caught:
        price(10_000, 90, 4_000, POLICY, coupon_fen=2_000)  # 40 yuan > 50% of the 70 left
    assert caught.value.field == "points_offset"


@given(st.integers(0, 10**9), st.integers(1, 100), st.integers(0, 10**9))
def test_every_fen_is_accounted_for_with_a_coupon(amount: int, percent: int, coupon: int) -> None:
    discounted = amount * percent // 100
    coupon = min(coupon, discounted)
    points = max_offset_points(discounted - coupon, POLICY)
    quote = price(amount, percent, points, POLICY, coupon_fen=coupon)
    assert quote.paid_fen + quote.discount_fen + quote.coupon_fen + quote.offset_fen == amount
