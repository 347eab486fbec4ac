"""The send governor's budgets, reach per channel, the holdout draw, content limits, retries, uplift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.rules import campaigns as rules
from handlers.rules.campaigns import Caps, Contact, Touches

NOW = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


@pytest.mark.parametrize(
    ("channel", "touches", "reason"),
    [
        ("subscribe", Touches(), None),
        ("subscribe", Touches(marketing_today=1), "frequency_cap"),
        ("mass", Touches(mass_this_month=3), None),
        ("mass", Touches(mass_this_month=4), "mass_monthly_quota"),
        ("sms", Touches(sms_today=1), "sms_daily_cap"),
        ("custom", Touches(sms_today=5, mass_this_month=9), None),
    ],
)
def test_budgets(channel: rules.Channel, touches: Touches, reason: str | None) -> None:
    assert rules.budget_refusal(channel, touches, Caps()) == reason


def test_a_merchant_may_allow_more_marketing_a_day() -> None:
    caps = Caps(marketing_per_day=3, sms_per_day=2)
    assert rules.budget_refusal("sms", Touches(marketing_today=2, sms_today=1), caps) is None
    assert rules.budget_refusal("sms", Touches(marketing_today=2, sms_today=2), caps) == "sms_daily_cap"


FOLLOWER = Contact(oa_openid="o-1", mp_openid="mp-1", phone="13800000000", sms_consent=True)


@pytest.mark.parametrize(
    ("channel", "contact", "reason"),
    [
        ("mass", FOLLOWER, None),
        ("mass", Contact(None, "mp-1", None, False), "not_following"),
        ("sms", FOLLOWER, None),
        ("sms", Contact("o", None, None, True), "no_phone"),
        ("sms", Contact("o", None, "13800000000", False), "no_sms_consent"),
        ("subscribe", FOLLOWER, "no_subscribe_grant"),
        ("subscribe", Contact("o", None, None, False, subscribe_grants=2), "no_mini_program"),
        ("subscribe", Contact(None, "mp", None, False, subscribe_grants=1), None),
        ("custom", FOLLOWER, "outside_48h_window"),
        ("custom", Contact("o", None, None, False, window_opened_at=NOW - timedelta(hours=47)), None),
        (
            "custom",
            Contact("o", None, None, False, window_opened_at=NOW - timedelta(hours=48)),
            "outside_48h_window",
        ),
        ("custom", Contact("o", None, None, False, window_opened_at=NOW, window_sent=5), "window_quota_used"),
    ],
)
def test_reach(channel: rules.Channel, contact: Contact, reason: str | None) -> None:
    assert rules.reach_refusal(channel, contact, "TPL", NOW) == reason


def test_holdout_is_deterministic_and_about_its_share() -> None:
    held = [m for m in range(20_000) if rules.in_holdout(7, m, 10)]
    assert 1_800 < len(held) < 2_200
    assert held == [m for m in range(20_000) if rules.in_holdout(7, m, 10)]
    assert not any(rules.in_holdout(7, m, 0) for m in range(5_000))
    assert all(rules.in_holdout(7, m, 100) for m in range(1_000))
    other = {m for m in range(20_000) if rules.in_holdout(8, m, 10)}
    assert other != set(held)  # another campaign draws another share


def test_local_day_and_month() -> None:
    late = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # 01:00 on 1 December in Shanghai
    assert rules.local_day_start(late, "Asia/Shanghai").isoformat() == "2026-12-01T00:00:00+08:00"
    assert rules.local_month_start(NOW, "Asia/Shanghai").isoformat() == "2026-12-01T00:00:00+08:00"


@pytest.mark.parametrize(
    ("errcode", "status", "retried"),
    [
        (45009, None, True),
        (-1, None, True),
        (None, 502, True),
        (43004, None, False),
        (40003, None, False),
        (43101, None, False),
        (45015, None, False),
    ],
)
def test_retried(errcode: int | None, status: int | None, retried: bool) -> None:
    assert rules.retried(errcode, status) is retried


def test_retry_delay_grows_and_is_capped() -> None:
    delays = [rules.retry_delay(n).total_seconds() for n in range(1, 10)]
    assert delays[:3] == [5, 10, 20] and delays[-1] == 300 and delays == sorted(delays)


def test_content_limits() -> None:
    assert rules.subscribe_value_refusal("thing1", "双十二会员日") is None
    assert rules.subscribe_value_refusal("thing1", "字" * 21) == "关键词 thing1 的内容超过 20 个字"
    assert rules.subscribe_value_refusal("phrase2", "五个字以上了") is not None
    assert rules.subscribe_value_refusal("bogus", "x") is not None
    assert rules.subscribe_value_refusal("time3", "") is not None
    assert rules.text_refusal("mass", "  ") == "消息内容为空"
    assert rules.text_refusal("custom", "字" * 601) is not None
    assert rules.sms_params_refusal(["张三", "20"]) is None
    assert rules.sms_params_refusal([]) is not None
    assert rules.sms_params_refusal(["字" * 13]) is not None
    assert len(rules.client_msg_id(2**31 - 1, 2**31 - 1).encode()) <= rules.CLIENT_MSG_ID_BYTES


def test_uplift_known_values() -> None:
    result = rules.uplift(900, 180, 100, 10)  # 20% vs 10%
    assert result.uplift == pytest.approx(0.10)
    # se = sqrt(.2*.8/900 + .1*.9/100) = 0.03283
    assert result.low == pytest.approx(0.10 - 1.959964 * 0.0328295, abs=1e-5)
    assert result.high == pytest.approx(0.10 + 1.959964 * 0.0328295, abs=1e-5)
    assert rules.uplift(10, 1, 0, 0).uplift is None
    with pytest.raises(ValueError):
        rules.uplift(10, 11, 10, 1)


@given(st.integers(1, 10_000), st.floats(0, 1), st.integers(1, 10_000), st.floats(0, 1))
def test_uplift_interval_contains_the_estimate(n1: int, f1: float, n2: int, f2: float) -> None:
    result = rules.uplift(n1, int(n1 * f1), n2, int(n2 * f2))
    assert result.low is not None and result.high is not None and result.uplift is not None
    assert result.low <= result.uplift <= result.high
    assert -1 <= result.uplift <= 1
