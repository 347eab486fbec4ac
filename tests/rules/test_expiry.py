from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.rules.expiry import (
    ExpiryPolicy,
    InsufficientPoints,
    Lot,
    Never,
    RollingMonths,
    RuleError,
    YearlyClearance,
    allocate_spend,
    expiry_date,
    expiry_policy_to_dict,
    never,
    rolling_months,
    validate_expiry_policy,
    yearly_clearance,
)

SHANGHAI = "Asia/Shanghai"
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def at(days: int) -> datetime:
    return T0 + timedelta(days=days)


@pytest.mark.parametrize(
    ("lots", "amount", "plan"),
    [
        ([Lot(1, 100, at(10)), Lot(2, 100, at(5))], 150, [(2, 100), (1, 50)]),
        ([Lot(1, 100, None), Lot(2, 100, at(5))], 150, [(2, 100), (1, 50)]),  # never-expiring last
        ([Lot(9, 50, at(5)), Lot(3, 50, at(5))], 60, [(3, 50), (9, 10)]),  # tie: lower id first
        ([Lot(9, 50, None), Lot(3, 50, None)], 60, [(3, 50), (9, 10)]),
        ([Lot(1, 0, at(1)), Lot(2, 10, at(2))], 10, [(2, 10)]),  # empty lots are skipped
        ([Lot(1, 10, at(1))], 0, []),
        ([Lot(1, 10, at(1)), Lot(2, 10, at(2))], 10, [(1, 10)]),
        # Same instant written in another zone still compares correctly.
        ([Lot(1, 10, at(2)), Lot(2, 10, at(1).astimezone(ZoneInfo(SHANGHAI)))], 15, [(2, 10), (1, 5)]),
    ],
)
def test_allocate_spend(lots: list[Lot], amount: int, plan: list[tuple[int, int]]) -> None:
    assert allocate_spend(lots, amount) == plan


def test_insufficient_points_allocates_nothing() -> None:
    with pytest.raises(InsufficientPoints) as caught:
        allocate_spend([Lot(1, 30, None), Lot(2, 20, at(1))], 51)
    assert (caught.value.needed, caught.value.available) == (51, 50)


def test_expired_lots_are_ignored_when_now_is_given() -> None:
    lots = [Lot(1, 100, at(1)), Lot(2, 100, at(3))]
    assert allocate_spend(lots, 50, now=at(1)) == [(2, 50)]  # lot 1 expires exactly now
    assert allocate_spend(lots, 50, now=at(1) - timedelta(microseconds=1)) == [(1, 50)]
    with pytest.raises(InsufficientPoints):
        allocate_spend(lots, 150, now=at(2))


@pytest.mark.parametrize(
    "bad",
    [
        lambda: allocate_spend([], -1),
        lambda: allocate_spend([Lot(1, -5, None)], 0),
        lambda: Lot(1, 5, datetime(2026, 1, 1)),  # naive expiry
    ],
)
def test_allocate_spend_rejects_nonsense(bad: object) -> None:
    with pytest.raises(ValueError):
        bad()  # type: ignore[operator]


def end_of(day: str, tz: str = SHANGHAI) -> datetime:
    return datetime.combine(date.fromisoformat(day), time.max, ZoneInfo(tz))


def local(text: str, tz: str = SHANGHAI) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


@pytest.mark.parametrize(
    ("earned", "policy", "expected"),
    [
        (local("2026-01-31T10:00"), rolling_months(1), end_of("2026-02-28")),
        (local("2028-01-31T10:00"), rolling_months(1), end_of("2028-02-29")),  # leap year
        (local("2028-02-29T10:00"), rolling_months(12), end_of("2029-02-28")),
        (local("2028-02-29T10:00"), rolling_months(48), end_of("2032-02-29")),
        (local("2026-03-31T10:00"), rolling_months(1), end_of("2026-04-30")),
        (local("2026-11-15T10:00"), rolling_months(3), end_of("2027-02-15")),
        (local("2026-12-31T23:59"), rolling_months(12), end_of("2027-12-31")),
        # 2026-01-31 16:30 UTC is already Feb 1 in Shanghai.
        (datetime(2026, 1, 31, 16, 30, tzinfo=UTC), rolling_months(1), end_of("2026-03-01")),
        (local("2026-06-15T10:00"), yearly_clearance(12, 31), end_of("2026-12-31")),
        (local("2026-12-31T10:00"), yearly_clearance(12, 31), end_of("2027-12-31")),  # strictly after
        (local("2026-12-30T10:00"), yearly_clearance(12, 31), end_of("2026-12-31")),
        (local("2026-07-01T10:00"), yearly_clearance(6, 30), end_of("2027-06-30")),
        (local("2026-03-01T10:00"), yearly_clearance(2, 29), end_of("2027-02-28")),
        (local("2027-03-01T10:00"), yearly_clearance(2, 29), end_of("2028-02-29")),
        (local("2026-06-15T10:00"), never(), None),
    ],
)
def test_expiry_date(earned: datetime, policy: ExpiryPolicy, expected: datetime | None) -> None:
    assert expiry_date(earned, policy, SHANGHAI) == expected


def test_expiry_is_the_end_of_the_local_day_even_across_dst() -> None:
    result = expiry_date(local("2026-02-08T12:00", "America/New_York"), rolling_months(1), "America/New_York")
    assert result == end_of("2026-03-08", "America/New_York")
    assert result is not None
    assert result.astimezone(UTC) == datetime(2026, 3, 9, 3, 59, 59, 999_999, tzinfo=UTC)  # EDT, UTC-4


def test_expiry_date_needs_an_aware_time() -> None:
    with pytest.raises(ValueError):
        expiry_date(datetime(2026, 1, 1), never(), SHANGHAI)


@pytest.mark.parametrize(
    ("raw", "policy"),
    [
        ({"kind": "never"}, Never()),
        ({"kind": "rolling_months", "months": 12}, RollingMonths(12)),
        ({"kind": "yearly_clearance", "month": 12, "day": 31}, YearlyClearance(12, 31)),
        ({"kind": "yearly_clearance", "month": 2, "day": 29}, YearlyClearance(2, 29)),
    ],
)
def test_policy_round_trip(raw: dict[str, object], policy: ExpiryPolicy) -> None:
    assert validate_expiry_policy(raw) == policy
    assert expiry_policy_to_dict(policy) == raw


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({}, "kind"),
        ([], "$"),
        ({"kind": "monthly"}, "kind"),
        ({"kind": "never", "months": 3}, "months"),
        ({"kind": "rolling_months"}, "months"),
        ({"kind": "rolling_months", "months": 0}, "months"),
        ({"kind": "rolling_months", "months": 121}, "months"),
        ({"kind": "rolling_months", "months": "12"}, "months"),
        ({"kind": "rolling_months", "months": 12, "day": 1}, "day"),
        ({"kind": "yearly_clearance", "month": 13, "day": 1}, "month"),
        ({"kind": "yearly_clearance", "month": 2, "day": 30}, "day"),
        ({"kind": "yearly_clearance", "month": 4, "day": 31}, "day"),
        ({"kind": "yearly_clearance", "month": 4}, "day"),
        ({"kind": "never", "colour": 1}, "colour"),
    ],
)
def test_invalid_policy_names_the_field(raw: object, field: str) -> None:
    with pytest.raises(RuleError) as caught:
        validate_expiry_policy(raw)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "build", [lambda: RollingMonths(0), lambda: YearlyClearance(2, 30), lambda: YearlyClearance(0, 1)]
)
def test_policies_check_themselves(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


# --- properties ---------------------------------------------------------------------------------------

expiries = st.none() | st.integers(0, 30).map(at)
lot_lists = st.lists(st.tuples(st.integers(0, 500), expiries), max_size=8).map(
    lambda rows: [Lot(index, remaining, expires) for index, (remaining, expires) in enumerate(rows)]
)


@settings(max_examples=200, deadline=None)
@given(lot_lists, st.integers(0, 4_000))
def test_allocation_sums_to_the_amount_and_respects_each_lot(lots: list[Lot], amount: int) -> None:
    total = sum(lot.remaining for lot in lots)
    if amount > total:
        with pytest.raises(InsufficientPoints):
            allocate_spend(lots, amount)
        return
    plan = allocate_spend(lots, amount)
    by_id = {lot.id: lot for lot in lots}
    assert sum(take for _, take in plan) == amount
    assert all(0 < take <= by_id[lot_id].remaining for lot_id, take in plan)
    assert len({lot_id for lot_id, _ in plan}) == len(plan)
    # Only the last lot drawn may be left partly full, and every drawn lot expires no later than any
    # undrawn non-empty lot.
    assert all(take == by_id[lot_id].remaining for lot_id, take in plan[:-1])
    drawn = {lot_id for lot_id, _ in plan}
    skipped = [lot for lot in lots if lot.id not in drawn and lot.remaining > 0]
    for lot_id, _ in plan:
        mine = by_id[lot_id].expires_at
        for other in skipped:
            assert mine is not None or other.expires_at is None
            assert mine is None or other.expires_at is None or mine <= other.expires_at


clearances = [YearlyClearance(12, 31), YearlyClearance(2, 29), YearlyClearance(1, 1)]
policies = st.one_of(st.just(Never()), st.integers(1, 120).map(RollingMonths), st.sampled_from(clearances))


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC)),
    policies,
    st.sampled_from([SHANGHAI, "America/New_York", "UTC"]),
)
def test_expiry_is_after_the_earn_day_at_its_last_instant(
    earned: datetime, policy: ExpiryPolicy, tz: str
) -> None:
    result = expiry_date(earned, policy, tz)
    if isinstance(policy, Never):
        assert result is None
        return
    assert result is not None
    assert result > earned
    local_result = result.astimezone(ZoneInfo(tz))
    assert local_result.time() == time.max
    assert local_result.date() > earned.astimezone(ZoneInfo(tz)).date()
    assert validate_expiry_policy(expiry_policy_to_dict(policy)) == policy
