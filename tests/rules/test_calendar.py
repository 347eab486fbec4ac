"""The calendar rules: month steps clamp to shorter months, birthdays on 29 February."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.rules.calendar import add_months, birthday_in, day_start, next_month, year_start


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(2026, 3, 31), -1, date(2026, 2, 28)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
        (date(2026, 1, 15), -13, date(2024, 12, 15)),
        (date(2026, 5, 20), 0, date(2026, 5, 20)),
    ],
)
def test_add_months_clamps_to_the_end_of_a_shorter_month(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)))
def test_next_month_is_the_first_of_the_following_month(day: date) -> None:
    following = next_month(day)
    assert following.day == 1 and following > day and (following.month - day.month) % 12 == 1


def test_a_29_february_birthday_is_celebrated_on_28_february_in_other_years() -> None:
    assert birthday_in(2027, date(1996, 2, 29)) == date(2027, 2, 28)
    assert birthday_in(2028, date(1996, 2, 29)) == date(2028, 2, 29)
    assert birthday_in(2027, date(1996, 5, 20)) == date(2027, 5, 20)


def test_day_and_year_start_are_merchant_local_midnights() -> None:
    moment = datetime(2026, 12, 31, 17, 30, tzinfo=UTC)  # 01:30 on 1 January 2027 in Shanghai
    assert day_start(moment, "Asia/Shanghai").isoformat() == "2027-01-01T00:00:00+08:00"
    assert year_start(moment, "Asia/Shanghai").isoformat() == "2027-01-01T00:00:00+08:00"
    assert year_start(moment, "UTC").isoformat() == "2026-01-01T00:00:00+00:00"
