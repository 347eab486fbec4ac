"""The pure parts of automatic tag rules: validation and normalisation, RFM names, age bands."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.rules.errors import RuleError
from handlers.rules.tag_rules import RFM_SEGMENTS, birthday_bounds, parse_rule, rfm_segment


def test_the_eight_classic_segments() -> None:
    assert len(set(RFM_SEGMENTS.values())) == 8
    assert rfm_segment(True, True, True) == "重要价值客户"
    assert rfm_segment(True, False, True) == "重要发展客户"
    assert rfm_segment(False, True, True) == "重要保持客户"
    assert rfm_segment(False, False, True) == "重要挽留客户"
    assert rfm_segment(True, True, False) == "一般价值客户"
    assert rfm_segment(True, False, False) == "一般发展客户"
    assert rfm_segment(False, True, False) == "一般保持客户"
    assert rfm_segment(False, False, False) == "一般挽留客户"


def test_normalised_lists_and_open_bounds() -> None:
    assert parse_rule({"type": "birthday_month", "months": [3, 1, 3]}) == {
        "type": "birthday_month",
        "months": [1, 3],
    }
    assert parse_rule({"type": "points", "min": 10}) == {"type": "points", "min": 10, "max": None}
    assert parse_rule({"type": "unused_coupon"}) == {"type": "unused_coupon", "template_ids": None}
    assert parse_rule({"type": "gender", "genders": ["female"]}, {"genders": {"female", "male"}}) == {
        "type": "gender",
        "genders": ["female"],
    }


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "$"),
        ({}, "type"),
        ({"type": "churn"}, "days"),
        ({"type": "churn", "days": True}, "days"),
        ({"type": "churn", "days": 0}, "days"),
        ({"type": "points", "min": 5, "max": 1}, "min"),
        ({"type": "store", "store_ids": []}, "store_ids"),
        ({"type": "preference", "by": "sku", "values": [""], "window_days": 30}, "values[0]"),
        ({"type": "avg_ticket", "window_days": 9999}, "window_days"),
        ({"type": "gender", "genders": ["robot"]}, "genders[0]"),
    ],
)
def test_errors_name_the_field(raw: Any, field: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule(raw, {"genders": {"male", "female"}})
    assert caught.value.field == field


def age(born: date, today: date) -> int:
    years = today.year - born.year
    birthday = (born.month, born.day) if (born.month, born.day) != (2, 29) else (3, 1)
    if (today.month, today.day) < birthday and not (born.month, born.day) == (2, 29) == (
        today.month,
        today.day,
    ):
        years -= 1
    return years


@given(
    born=st.dates(min_value=date(1920, 1, 1), max_value=date(2020, 12, 31)),
    today=st.dates(min_value=date(2021, 1, 1), max_value=date(2030, 12, 31)),
    low=st.integers(0, 100),
    span=st.integers(0, 30),
)
def test_birthday_bounds_select_exactly_the_ages(born: date, today: date, low: int, span: int) -> None:
    earliest, latest = birthday_bounds(today, low, low + span)
    assert earliest is not None and latest is not None
    inside = earliest <= born <= latest
    assert inside == (low <= age(born, today) <= low + span)


def test_a_29_february_birthday_comes_on_1_march_in_common_years() -> None:
    born = date(2000, 2, 29)
    _, latest = birthday_bounds(date(2023, 2, 28), 23, None)
    assert latest is not None and born > latest
    _, latest = birthday_bounds(date(2023, 3, 1), 23, None)
    assert latest is not None and born <= latest
    assert birthday_bounds(date(2024, 2, 29), 1, 1)[1] == date(2023, 2, 28)
    assert birthday_bounds(date(2024, 2, 29), 1, 1)[0] == date(2022, 2, 28) + timedelta(days=1)
