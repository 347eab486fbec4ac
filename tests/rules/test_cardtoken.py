from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.rules.cardtoken import MAX_MEMBER_ID, TokenError, issue, verify

SECRET = b"card-secret-0123456789abcdef-0123"
MERCHANT = 42
NOW = 1_790_000_000  # 2026-09
SCENE_SAFE = re.compile(r"[0-9A-Za-z.]{1,32}")


def reason_of(
    token: str, *, secret: bytes = SECRET, merchant: int = MERCHANT, now: int = NOW, window: int = 60
) -> str:
    with pytest.raises(TokenError) as caught:
        verify(secret, merchant, token, now, window=window)
    return caught.value.reason


@pytest.mark.parametrize("member_id", [1, 61, 62, 123_456_789, 2**53, 2**53 + 1, MAX_MEMBER_ID])
def test_round_trip(member_id: int) -> None:
    token = issue(SECRET, MERCHANT, member_id, NOW)
    assert SCENE_SAFE.fullmatch(token)
    assert verify(SECRET, MERCHANT, token, NOW) == member_id


@pytest.mark.parametrize("now", [0, 59, NOW, 4_102_444_800, 60 * 62**5 - 1])  # up to the year 3700
@pytest.mark.parametrize("member_id", [1, 2**53, MAX_MEMBER_ID])
def test_token_fits_a_mini_program_scene(member_id: int, now: int) -> None:
    token = issue(SECRET, MERCHANT, member_id, now)
    assert len(token) <= 32
    assert SCENE_SAFE.fullmatch(token)


def test_token_shape() -> None:
    member, window, mac = issue(SECRET, MERCHANT, 62, NOW).split(".")
    assert member == "10"
    assert window == issue(SECRET, MERCHANT, 1, NOW).split(".")[1]
    assert len(mac) == 14


def test_token_rotates_each_window_and_is_stable_within_one() -> None:
    start = NOW - NOW % 60
    assert issue(SECRET, MERCHANT, 7, start) == issue(SECRET, MERCHANT, 7, start + 59)
    assert issue(SECRET, MERCHANT, 7, start) != issue(SECRET, MERCHANT, 7, start + 60)


@pytest.mark.parametrize(
    ("issued", "checked", "outcome"),
    [
        (6_000, 6_000, "ok"),
        (6_000, 6_059, "ok"),
        (6_000, 6_119, "ok"),  # the previous window is still accepted
        (6_059, 6_119, "ok"),
        (6_000, 6_120, "expired"),  # two windows back
        (6_059, 6_120, "expired"),
        (6_000, 99_999, "expired"),
        (6_060, 6_059, "future"),
        (6_000, 5_999, "future"),
    ],
)
def test_expiry_boundaries(issued: int, checked: int, outcome: str) -> None:
    token = issue(SECRET, MERCHANT, 99, issued)
    if outcome == "ok":
        assert verify(SECRET, MERCHANT, token, checked) == 99
    else:
        assert reason_of(token, now=checked) == outcome


def test_accept_windows_widens_the_lifetime() -> None:
    token = issue(SECRET, MERCHANT, 99, 6_000)
    assert verify(SECRET, MERCHANT, token, 6_179, accept_windows=3) == 99
    with pytest.raises(TokenError):
        verify(SECRET, MERCHANT, token, 6_179, accept_windows=2)


def test_other_merchant_secret_or_window_is_rejected() -> None:
    token = issue(SECRET, MERCHANT, 5, NOW)
    assert reason_of(token, merchant=MERCHANT + 1) == "bad_mac"
    assert reason_of(token, secret=SECRET + b"x") == "bad_mac"
    assert reason_of(token, window=30) == "bad_mac"


def test_forgery_reports_bad_mac_even_when_stale() -> None:
    _, window, mac = issue(SECRET, MERCHANT, 5, 6_000).split(".")
    assert reason_of(f"6.{window}.{mac}", now=NOW) == "bad_mac"


def test_every_single_character_change_is_rejected() -> None:
    token = issue(SECRET, MERCHANT, 123_456, NOW)
    for position, original in enumerate(token):
        for replacement in "0aZ.":
            if replacement == original:
                continue
            tampered = token[:position] + replacement + token[position + 1 :]
            assert reason_of(tampered) in {"bad_mac", "malformed"}


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "1.1.",
        ".1.AAAAAAAAAAAAAA",
        "01.1.AAAAAAAAAAAAAA",  # non-canonical member id
        "1.01.AAAAAAAAAAAAAA",  # non-canonical window
        "0.1.AAAAAAAAAAAAAA",  # member 0
        "1.1.AAAAAAAAAAAAA",  # short MAC
        "1.1.AAAAAAAAAAAAAAA",  # long MAC
        "1.1.AAAAAAAAAAAAA-",
        "١.1.AAAAAAAAAAAAAA",  # Arabic-Indic digit
        "zzzzzzzzzzz.1.AAAAAAAAAAAAAA",  # above 2^63
        "1.zzzzzzzzzzz.AAAAAAAAAAAAAA",
        "1" * 33,
    ],
)
def test_malformed_tokens(token: str) -> None:
    assert reason_of(token) == "malformed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secret": b"short"}, "secret"),
        ({"merchant_id": 0}, "merchant_id"),
        ({"member_id": 0}, "member_id"),
        ({"member_id": MAX_MEMBER_ID + 1}, "member_id"),
        ({"window": 0}, "window"),
        ({"now": -1}, "now"),
        ({"now": 62**5, "window": 1, "member_id": MAX_MEMBER_ID}, "longer window"),
    ],
)
def test_issue_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"secret": SECRET, "merchant_id": MERCHANT, "member_id": 1, "now": NOW}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        issue(**arguments)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40) | st.text(alphabet="0123456789abcXYZ.", max_size=40))
def test_fuzzed_tokens_only_ever_raise_token_error(token: str) -> None:
    try:
        verify(SECRET, MERCHANT, token, NOW)
    except TokenError as error:
        assert error.reason in {"malformed", "bad_mac", "expired", "future"}
    else:
        pytest.fail(f"random token accepted: {token!r}")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, MAX_MEMBER_ID), st.integers(0, 62**5 - 1), st.integers(1, 86_400), st.data())
def test_round_trip_and_mutation_property(
    member_id: int, index: int, window: int, data: st.DataObject
) -> None:
    now = index * window + data.draw(st.integers(0, window - 1))
    token = issue(SECRET, MERCHANT, member_id, now, window=window)
    assert len(token) <= 32
    assert verify(SECRET, MERCHANT, token, now, window=window) == member_id
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.characters(codec="utf-8").filter(lambda c: c != token[position]))
    with pytest.raises(TokenError):
        verify(SECRET, MERCHANT, token[:position] + replacement + token[position + 1 :], now, window=window)
