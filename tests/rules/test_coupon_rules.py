from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.rules import coupons as rules
from handlers.rules.coupons import Terms, Validity, Window
from handlers.rules.errors import RuleError

SHANGHAI = "Asia/Shanghai"
NOW = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)  # 14:00 in Shanghai
OPEN = Window(NOW - timedelta(days=1), NOW + timedelta(days=1))


@pytest.mark.parametrize(
    ("terms", "field"),
    [
        (Terms("cash"), "kind"),
        (Terms("fixed"), "amount_off_fen"),
        (Terms("fixed", threshold_fen=10_000, amount_off_fen=10_001), "amount_off_fen"),
        (Terms("fixed", amount_off_fen=100, percent_off=10), "percent_off"),
        (Terms("fixed", threshold_fen=-1, amount_off_fen=100), "threshold_fen"),
        (Terms("percent", percent_off=0), "percent_off"),
        (Terms("percent", percent_off=100), "percent_off"),
        (Terms("percent", percent_off=20, cap_fen=0), "cap_fen"),
        (Terms("percent", percent_off=20, amount_off_fen=5), "amount_off_fen"),
        (Terms("gift"), "gift_name"),
        (Terms("gift", gift_name="  "), "gift_name"),
        (Terms("gift", gift_name="咖啡", cap_fen=100), "cap_fen"),
    ],
)
def test_bad_terms_name_the_field(terms: Terms, field: str) -> None:
    with pytest.raises(RuleError) as caught:
        rules.check_terms(terms)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "terms",
    [
        Terms("fixed", threshold_fen=10_000, amount_off_fen=2_000),
        Terms("fixed", threshold_fen=2_000, amount_off_fen=2_000),
        Terms("fixed", amount_off_fen=500),
        Terms("percent", percent_off=20),
        Terms("percent", percent_off=99, cap_fen=5_000, threshold_fen=100),
        Terms("gift", gift_name="咖啡一杯", threshold_fen=3_000),
    ],
)
def test_good_terms_pass(terms: Terms) -> None:
    rules.check_terms(terms)


@pytest.mark.parametrize(
    ("validity", "field"),
    [
        (Validity(), "valid_days"),
        (Validity(NOW, NOW + timedelta(days=1), 7), "valid_days"),
        (Validity(None, NOW), "valid_from"),
        (Validity(NOW, None), "valid_until"),
        (Validity(NOW, NOW), "valid_until"),
        (Validity(NOW.replace(tzinfo=None), NOW + timedelta(days=1)), "valid_from"),
        (Validity(days=0), "valid_days"),
        (Validity(days=rules.MAX_VALID_DAYS + 1), "valid_days"),
    ],
)
def test_bad_validity_names_the_field(validity: Validity, field: str) -> None:
    with pytest.raises(RuleError) as caught:
        rules.check_validity(validity)
    assert caught.value.field == field


def test_relative_validity_ends_at_the_end_of_the_local_day() -> None:
    valid_from, valid_until = rules.window(Validity(days=1), issued_at=NOW, timezone=SHANGHAI)
    assert valid_from == NOW
    # issued 1 May 14:00 Shanghai → usable through 2 May, i.e. until 3 May 00:00 Shanghai
    assert valid_until == datetime(2024, 5, 2, 16, 0, tzinfo=UTC)
    late = datetime(2024, 5, 1, 16, 30, tzinfo=UTC)  # already 2 May 00:30 in Shanghai
    assert rules.window(Validity(days=1), issued_at=late, timezone=SHANGHAI)[1] == datetime(
        2024, 5, 3, 16, 0, tzinfo=UTC
    )


def test_fixed_validity_is_the_templates() -> None:
    until = NOW + timedelta(days=30)
    assert rules.window(Validity(NOW, until), issued_at=NOW + timedelta(days=3), timezone=SHANGHAI) == (
        NOW,
        until,
    )


@pytest.mark.parametrize(
    ("terms", "order", "off"),
    [
        (Terms("fixed", threshold_fen=10_000, amount_off_fen=2_000), 10_000, 2_000),
        (Terms("fixed", amount_off_fen=2_000), 1_500, 1_500),
        (Terms("percent", percent_off=20), 12_345, 2_469),
        (Terms("percent", percent_off=20, cap_fen=1_000), 12_345, 1_000),
        (Terms("percent", percent_off=15), 1, 0),
        (Terms("gift", gift_name="咖啡"), 50_000, 0),
    ],
)
def test_discount(terms: Terms, order: int, off: int) -> None:
    assert rules.discount(terms, order) == off


def _refusal(terms: Terms, order: int, window: Window = OPEN, store: str | None = "main") -> str | None:
    refused = rules.refusal(terms, window, order_fen=order, store_code=store, now=NOW, timezone=SHANGHAI)
    return None if refused is None else f"{refused.code}:{refused.reason}"


def test_refusals_say_why_in_chinese() -> None:
    full = Terms("fixed", threshold_fen=10_000, amount_off_fen=2_000)
    assert _refusal(full, 10_000) is None
    assert _refusal(full, 9_999) == "not_applicable:满 100.00 元可用"
    assert _refusal(full, 10_000, Window(NOW - timedelta(days=2), NOW)) == "expired:优惠券已过期"
    later = Window(datetime(2024, 6, 1, 16, 0, tzinfo=UTC), NOW + timedelta(days=60))
    assert _refusal(full, 10_000, later) == "not_applicable:2024-06-02 00:00 起可用"
    only_b = Window(OPEN.valid_from, OPEN.valid_until, ("b",))
    assert _refusal(full, 10_000, only_b) == "not_applicable:本门店不可使用该券"
    assert _refusal(full, 10_000, only_b, store=None) == "not_applicable:本门店不可使用该券"
    assert _refusal(full, 10_000, only_b, store="b") is None


@pytest.mark.parametrize(
    ("terms", "text"),
    [
        (Terms("fixed", threshold_fen=10_000, amount_off_fen=2_000), "满100减20"),
        (Terms("fixed", threshold_fen=9_950, amount_off_fen=1_005), "满99.5减10.05"),
        (Terms("fixed", amount_off_fen=500), "无门槛减5元"),
        (Terms("percent", percent_off=20), "8折"),
        (Terms("percent", percent_off=15, cap_fen=5_000), "8.5折（最高减50元）"),
        (Terms("percent", percent_off=5, threshold_fen=20_000), "满200享9.5折"),
        (Terms("gift", gift_name="咖啡一杯"), "赠咖啡一杯"),
        (Terms("gift", gift_name="咖啡一杯", threshold_fen=3_000), "满30赠咖啡一杯"),
    ],
)
def test_descriptions(terms: Terms, text: str) -> None:
    assert rules.describe(terms) == text


def test_validity_texts_show_whole_days_or_minutes() -> None:
    start = datetime(2024, 4, 30, 16, 0, tzinfo=UTC)  # 1 May 00:00 Shanghai
    end = datetime(2024, 5, 31, 16, 0, tzinfo=UTC)  # 1 June 00:00 Shanghai (exclusive)
    assert rules.validity_text(start, end, SHANGHAI) == "2024-05-01 至 2024-05-31"
    assert rules.until_text(NOW, SHANGHAI) == "2024-05-01 14:00"


def _fixed(threshold: int, off: int) -> Terms:
    return Terms("fixed", threshold_fen=threshold, amount_off_fen=min(off, threshold or off))


def _percent(percent: int, cap: int | None, threshold: int) -> Terms:
    return Terms("percent", percent_off=percent, cap_fen=cap, threshold_fen=threshold)


fen = st.integers(0, rules.MAX_FEN)
terms_strategy = st.one_of(
    st.builds(_fixed, fen, st.integers(1, rules.MAX_FEN)),
    st.builds(_percent, st.integers(1, 99), st.none() | st.integers(1, rules.MAX_FEN), fen),
    st.builds(lambda t: Terms("gift", gift_name="赠品", threshold_fen=t), st.integers(0, rules.MAX_FEN)),
)


@given(terms=terms_strategy, order=st.integers(1, 10 * rules.MAX_FEN))
def test_discount_within_order_and_cap_and_threshold_respected(terms: Terms, order: int) -> None:
    rules.check_terms(terms)
    off = rules.discount(terms, order)
    assert 0 <= off <= order
    if terms.cap_fen is not None:
        assert off <= terms.cap_fen
    if terms.kind == "fixed":
        assert off <= terms.amount_off_fen
    refused = rules.refusal(terms, OPEN, order_fen=order, store_code=None, now=NOW, timezone=SHANGHAI)
    assert (refused is None) == (order >= terms.threshold_fen)
