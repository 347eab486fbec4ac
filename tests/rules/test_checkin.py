from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.rules.calendar import day_bounds_utc, local_day
from handlers.rules.checkin import (
    CheckinPolicy,
    RuleError,
    checkin_points,
    checkin_policy_to_dict,
    makeup_allowed,
    month_calendar,
    points_table,
    streak_after,
    streak_rewards,
    validate_checkin_policy,
)

SHANGHAI = "Asia/Shanghai"
NEW_YORK = "America/New_York"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "tz", "expected"),
    [
        (utc("2026-01-01T15:59:00"), SHANGHAI, date(2026, 1, 1)),  # 23:59 Shanghai
        (utc("2026-01-01T16:01:00"), SHANGHAI, date(2026, 1, 2)),  # 00:01 Shanghai
        (utc("2025-12-31T16:00:00"), SHANGHAI, date(2026, 1, 1)),  # new year at local midnight
        (utc("2026-06-30T18:29:59"), "Asia/Kolkata", date(2026, 6, 30)),  # +05:30, no DST
        (utc("2026-06-30T18:30:00"), "Asia/Kolkata", date(2026, 7, 1)),
        (utc("2026-03-08T04:59:00"), NEW_YORK, date(2026, 3, 7)),  # 23:59 EST, DST starts that night
        (utc("2026-03-08T05:00:00"), NEW_YORK, date(2026, 3, 8)),
        (utc("2026-03-09T03:59:00"), NEW_YORK, date(2026, 3, 8)),  # 23:59 EDT
        (utc("2026-03-09T04:00:00"), NEW_YORK, date(2026, 3, 9)),
        (utc("2026-11-01T03:59:00"), NEW_YORK, date(2026, 10, 31)),  # 23:59 EDT, DST ends that night
        (utc("2026-11-02T04:59:00"), NEW_YORK, date(2026, 11, 1)),  # 23:59 EST
        (utc("2026-11-02T05:00:00"), NEW_YORK, date(2026, 11, 2)),
        (datetime(2026, 1, 2, 0, 1, tzinfo=timezone(timedelta(hours=8))), "UTC", date(2026, 1, 1)),
    ],
)
def test_local_day(now: datetime, tz: str, expected: date) -> None:
    assert local_day(now, tz) == expected


def test_local_day_refuses_naive_times() -> None:
    with pytest.raises(ValueError):
        local_day(datetime(2026, 1, 1, 12), SHANGHAI)


@pytest.mark.parametrize(
    ("day", "tz", "start", "hours"),
    [
        (date(2026, 1, 2), SHANGHAI, utc("2026-01-01T16:00:00"), 24),
        (date(2026, 3, 8), NEW_YORK, utc("2026-03-08T05:00:00"), 23),
        (date(2026, 11, 1), NEW_YORK, utc("2026-11-01T04:00:00"), 25),
        (date(2026, 7, 1), NEW_YORK, utc("2026-07-01T04:00:00"), 24),
    ],
)
def test_day_bounds_follow_dst(day: date, tz: str, start: datetime, hours: int) -> None:
    begin, end = day_bounds_utc(day, tz)
    assert begin == start
    assert end - begin == timedelta(hours=hours)


D = date(2026, 3, 10)


@pytest.mark.parametrize(
    ("checked", "day", "expected"),
    [
        ([], D, 1),
        ([D], D, 1),
        ([D - timedelta(days=1)], D, 2),
        ([D - timedelta(days=n) for n in range(1, 7)], D, 7),
        ([D - timedelta(days=1), D - timedelta(days=3)], D, 2),  # gap on day -2
        ([D - timedelta(days=2)], D, 1),
        ([D + timedelta(days=1), D - timedelta(days=1)], D, 2),  # later days do not count
        ([date(2028, 2, 28), date(2028, 2, 29)], date(2028, 3, 1), 3),  # leap day
        ([date(2026, 2, 27), date(2026, 2, 28)], date(2026, 3, 1), 3),
        ([date(2025, 12, 31)], date(2026, 1, 1), 2),
    ],
)
def test_streak_after(checked: list[date], day: date, expected: int) -> None:
    assert streak_after(checked, day) == expected


def test_streak_counts_make_up_days() -> None:
    regular = [D - timedelta(days=n) for n in (1, 2, 4, 5)]
    assert streak_after(regular, D) == 3
    made_up = D - timedelta(days=3)
    assert streak_after([*regular, made_up], D) == 6


@pytest.mark.parametrize(
    ("streak", "rewards", "cycle", "expected"),
    [
        (7, {7: 50}, None, 50),
        (6, {7: 50}, None, 0),
        (14, {7: 50}, None, 0),
        (14, {7: 50}, 7, 50),
        (21, {3: 10, 7: 50}, 7, 50),
        (10, {3: 10, 7: 50}, 7, 10),
        (8, {1: 5, 7: 50}, 7, 5),
        (0, {7: 50}, 7, 0),
        (30, {30: 300}, 30, 300),
    ],
)
def test_streak_rewards(streak: int, rewards: dict[int, int], cycle: int | None, expected: int) -> None:
    assert streak_rewards(streak, rewards, cycle) == expected


def test_checkin_points_adds_daily_and_streak_reward() -> None:
    policy = CheckinPolicy(daily_points=5, streak_rewards={7: 50}, cycle_days=7)
    assert [checkin_points(policy, n) for n in (1, 7, 8, 14)] == [5, 55, 5, 55]


TODAY = date(2026, 3, 10)


@pytest.mark.parametrize(
    ("day", "checked", "max_back", "extra", "allowed"),
    [
        (date(2026, 3, 9), [], 3, {}, True),
        (date(2026, 3, 7), [], 3, {}, True),
        (date(2026, 3, 6), [], 3, {}, False),  # too far back
        (date(2026, 3, 10), [], 3, {}, False),  # today is a check-in, not a make-up
        (date(2026, 3, 11), [], 3, {}, False),  # future
        (date(2026, 3, 9), [date(2026, 3, 9)], 3, {}, False),  # already checked
        (date(2026, 3, 9), [], 0, {}, False),  # make-ups disabled
        (date(2026, 3, 9), [], 3, {"used_this_month": 2, "max_per_month": 2}, False),
        (date(2026, 3, 9), [], 3, {"used_this_month": 1, "max_per_month": 2}, True),
        (date(2026, 3, 8), [], 3, {"not_before": date(2026, 3, 9)}, False),  # before joining
        (date(2026, 2, 28), [], 12, {}, True),  # across a month boundary
    ],
)
def test_makeup_allowed(
    day: date, checked: list[date], max_back: int, extra: dict[str, object], allowed: bool
) -> None:
    assert makeup_allowed(day, TODAY, checked, max_back, **extra) is allowed  # type: ignore[arg-type]


def test_month_calendar_flags() -> None:
    policy = CheckinPolicy(daily_points=1, makeup_max_days_back=2, makeup_max_per_month=3)
    checked = [date(2026, 3, 1), date(2026, 3, 9), date(2026, 2, 28)]
    days = month_calendar(2026, 3, checked, TODAY, policy=policy)
    assert len(days) == 31
    by_day = {d.day.day: d for d in days}
    assert by_day[1].checked and not by_day[2].checked
    assert by_day[10].is_today and not by_day[10].is_future and not by_day[10].can_make_up
    assert by_day[11].is_future and not by_day[9].is_future
    assert [n for n, d in by_day.items() if d.can_make_up] == [8]  # 9 is checked, 7 is too far back
    exhausted = month_calendar(2026, 3, checked, TODAY, policy=policy, makeups_used_this_month=3)
    assert not any(d.can_make_up for d in exhausted)
    assert not any(d.can_make_up for d in month_calendar(2026, 3, checked, TODAY))


@pytest.mark.parametrize(
    ("year", "month", "length"), [(2026, 2, 28), (2028, 2, 29), (2026, 4, 30), (2026, 12, 31)]
)
def test_month_calendar_length(year: int, month: int, length: int) -> None:
    days = month_calendar(year, month, [], TODAY)
    assert [d.day for d in days] == [date(year, month, 1) + timedelta(days=n) for n in range(length)]


def test_policy_parses_and_round_trips() -> None:
    raw = {
        "daily_points": 5,
        "streak_rewards": {"3": 10, "7": 50},
        "cycle_days": 7,
        "makeup_cost_points": 20,
        "makeup_max_days_back": 7,
        "makeup_max_per_month": 2,
    }
    policy = validate_checkin_policy(raw)
    assert policy == CheckinPolicy(5, {3: 10, 7: 50}, 7, 20, 7, 2)
    assert checkin_policy_to_dict(policy) == raw
    assert validate_checkin_policy(checkin_policy_to_dict(policy)) == policy
    assert validate_checkin_policy({"daily_points": 1, "streak_rewards": {7: 50}}).streak_rewards == {7: 50}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({}, "daily_points"),
        ({"daily_points": -1}, "daily_points"),
        ({"daily_points": "5"}, "daily_points"),
        ({"daily_points": 1, "bonus": 1}, "bonus"),
        ({"daily_points": 1, "streak_rewards": [50]}, "streak_rewards"),
        ({"daily_points": 1, "streak_rewards": {"0": 50}}, "streak_rewards.0"),
        ({"daily_points": 1, "streak_rewards": {"seven": 50}}, "streak_rewards.seven"),
        ({"daily_points": 1, "streak_rewards": {"7": 0}}, "streak_rewards.7"),
        ({"daily_points": 1, "streak_rewards": {"7": 50, 7: 60}}, "streak_rewards.7"),
        ({"daily_points": 1, "streak_rewards": {"14": 50}, "cycle_days": 7}, "streak_rewards.14"),
        ({"daily_points": 1, "cycle_days": 0}, "cycle_days"),
        ({"daily_points": 1, "makeup_cost_points": -5}, "makeup_cost_points"),
        ({"daily_points": 1, "makeup_max_days_back": 400}, "makeup_max_days_back"),
        ({"daily_points": 1, "makeup_max_per_month": 32}, "makeup_max_per_month"),
        ("daily_points=1", "$"),
    ],
)
def test_invalid_policy_names_the_field(raw: object, field: str) -> None:
    with pytest.raises(RuleError) as caught:
        validate_checkin_policy(raw)
    assert caught.value.field == field


# --- properties ---------------------------------------------------------------------------------------

zones = st.sampled_from([SHANGHAI, NEW_YORK, "UTC", "Asia/Kolkata", "Australia/Lord_Howe", "Europe/London"])
instants = st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC))


@settings(max_examples=200, deadline=None)
@given(instants, zones)
def test_local_day_is_the_day_whose_bounds_contain_the_instant(now: datetime, tz: str) -> None:
    start, end = day_bounds_utc(local_day(now, tz), tz)
    assert start <= now < end


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(-40, 40)), st.integers(-20, 20))
def test_streak_matches_a_naive_count(offsets: set[int], at: int) -> None:
    checked = [D + timedelta(days=n) for n in offsets]
    expected = 1
    while at - expected in offsets:
        expected += 1
    assert streak_after(checked, D + timedelta(days=at)) == expected


@settings(max_examples=100, deadline=None)
@given(st.sets(st.integers(0, 60)), st.integers(0, 60), st.integers(0, 40), st.integers(1, 12))
def test_calendar_never_offers_impossible_make_ups(
    offsets: set[int], today_offset: int, back: int, month: int
) -> None:
    today = date(2026, 1, 1) + timedelta(days=today_offset)
    checked = [date(2026, 1, 1) + timedelta(days=n) for n in offsets]
    policy = CheckinPolicy(daily_points=1, makeup_max_days_back=back)
    for entry in month_calendar(2026, month, checked, today, policy=policy):
        if entry.can_make_up:
            assert not entry.checked and not entry.is_today and not entry.is_future
            assert (today - entry.day).days <= back


@given(
    daily=st.integers(0, 50),
    rewards=st.dictionaries(st.integers(1, 40), st.integers(1, 500), max_size=5),
    cycle=st.one_of(st.none(), st.integers(1, 40)),
)
def test_points_table_gives_every_streak_the_points_the_rules_give(
    daily: int, rewards: dict[int, int], cycle: int | None
) -> None:
    """The PostgreSQL check-in function reads points from this table; it must agree with the rules."""
    policy = CheckinPolicy(daily_points=daily, streak_rewards=rewards, cycle_days=cycle)
    table, period = points_table(policy)
    for streak in range(1, 200):
        if period:
            looked_up = table[(streak - 1) % period]
        else:
            looked_up = table[streak - 1] if streak <= len(table) else policy.daily_points
        assert looked_up == checkin_points(policy, streak), streak
