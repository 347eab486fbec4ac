"""Notice channel rules: quiet hours across midnight, channel choice by WeChat's rules, field limits."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.rules.notices import (
    ChannelConfig,
    QuietHours,
    Reach,
    choose,
    quiet_until,
    template_value,
    valid_order,
)

SHANGHAI = "Asia/Shanghai"
NOW = datetime(2026, 12, 4, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
ALL = ChannelConfig(("template", "subscribe", "custom"), "TPL", "SUB")


def reach(**overrides: object) -> Reach:
    fields: dict[str, object] = {
        "oa_openid": "o-oa",
        "mp_openid": "o-mp",
        "subscribe_grants": 1,
        "window_opened_at": NOW - timedelta(hours=1),
        "window_sent": 0,
    }
    fields.update(overrides)
    return Reach(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("local", "ends"),
    [
        ("2026-12-04T21:59", None),
        ("2026-12-04T22:00", "2026-12-05T08:00"),
        ("2026-12-05T03:30", "2026-12-05T08:00"),
        ("2026-12-05T07:59", "2026-12-05T08:00"),
        ("2026-12-05T08:00", None),
    ],
)
def test_quiet_hours_span_midnight(local: str, ends: str | None) -> None:
    zone = datetime.fromisoformat(local + "+08:00")
    until = quiet_until(zone, SHANGHAI, QuietHours())
    assert (until.isoformat()[:16] if until else None) == ends


def test_no_quiet_hours_when_start_equals_end() -> None:
    assert quiet_until(NOW, SHANGHAI, QuietHours(time(0), time(0))) is None


@given(st.datetimes(timezones=st.just(UTC)), st.times(), st.times())
def test_quiet_until_is_never_before_now_nor_a_day_later(now: datetime, start: time, end: time) -> None:
    until = quiet_until(now, SHANGHAI, QuietHours(start, end))
    if until is not None:
        assert now < until <= now + timedelta(days=1)


def test_the_first_usable_channel_wins_in_the_configured_order() -> None:
    assert choose(ALL, reach(), NOW) == ("template", ())
    assert choose(ALL, reach(oa_openid=None), NOW) == ("subscribe", ("template:not_following",))
    order = ChannelConfig(("subscribe", "custom"), "", "SUB")
    assert choose(order, reach(subscribe_grants=0), NOW) == ("custom", ("subscribe:no_subscribe_grant",))


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ({"window_opened_at": None}, "custom:outside_48h_window"),
        ({"window_opened_at": NOW - timedelta(hours=48)}, "custom:outside_48h_window"),
        ({"window_sent": 5}, "custom:window_quota_used"),
        ({"oa_openid": None}, "custom:not_following"),
    ],
)
def test_customer_service_needs_the_48_hour_window_and_its_quota(who: dict[str, object], reason: str) -> None:
    assert choose(ChannelConfig(("custom",), "", ""), reach(**who), NOW) == (None, (reason,))


def test_no_channel_gives_every_reason() -> None:
    config = ChannelConfig(("template", "subscribe"), "", "SUB")
    assert choose(config, reach(mp_openid=None), NOW) == (
        None,
        ("template:no_template_configured", "subscribe:no_mini_program"),
    )


@given(st.text())
def test_template_values_are_one_line_of_at_most_20_characters(text: str) -> None:
    value = template_value(text)
    assert len(value) <= 20 and "\n" not in value and "\r" not in value


def test_template_values_are_cut_visibly() -> None:
    assert template_value("消费 128.00 元，获得 128 积分，当前积分 1,280") == "消费 128.00 元，获得 128 …"
    assert template_value(" 银卡\n会员 ") == "银卡 会员"


def test_channel_order_is_validated() -> None:
    assert valid_order(["custom", "template"]) == ("custom", "template")
    for bad in (["sms"], ["template", "template"], []):
        with pytest.raises(ValueError):
            valid_order(bad)
