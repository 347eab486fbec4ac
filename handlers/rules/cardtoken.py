"""The rotating member-card QR token, short enough for a WeChat mini-program `scene` (≤ 32 chars).

Format: ``base62(member_id) "." base62(window_index) "." mac`` where window_index = now // window
and mac is the first 80 bits of HMAC-SHA256(secret, domain ‖ merchant_id ‖ member_id ‖
window_index ‖ window), written as exactly 14 base62 characters. Numbers use canonical base62
(no leading zeros), so every accepted token has exactly one spelling. Member ids go up to 2^63 - 1
(11 characters); the whole token is at most 32 characters until window indexes need a 6th digit
(the year 3700 for 60-second windows).

A token issued in window w verifies in windows w … w + accept_windows - 1, so with the defaults it
lives between 60 and 120 seconds. The MAC is checked before the clock, so a forged token always
reports ``bad_mac``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Literal

__all__ = ["MAX_MEMBER_ID", "TokenError", "issue", "verify"]

TokenFailure = Literal["malformed", "bad_mac", "expired", "future"]

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MAX_MEMBER_ID = 2**63 - 1
MAX_TOKEN_CHARS = 32
MIN_SECRET_BYTES = 16
_DIGIT = {char: value for value, char in enumerate(ALPHABET)}
_MAC_BYTES = 10
_MAC_CHARS = 14  # 62**14 > 2**80
_MAX_NUMBER_CHARS = 11  # 62**11 > 2**63
_DOMAIN = b"memberbot/card-token/v1\x00"


class TokenError(ValueError):
    """A token that must not be honoured; `reason` says why."""

    def __init__(self, reason: TokenFailure) -> None:
        super().__init__(reason)
        self.reason: TokenFailure = reason


def issue(secret: bytes, merchant_id: int, member_id: int, now: int, window: int = 60) -> str:
    """The token for `member_id` at unix time `now` (seconds)."""
    _check_key(secret, merchant_id, window)
    if not 1 <= member_id <= MAX_MEMBER_ID:
        raise ValueError("member_id out of range")
    if now < 0:
        raise ValueError("now must be a non-negative unix time")
    index = now // window
    token = f"{_encode(member_id)}.{_encode(index)}.{_mac(secret, merchant_id, member_id, index, window)}"
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError("window index too large for a 32-character token; use a longer window")
    return token


def verify(
    secret: bytes, merchant_id: int, token: str, now: int, window: int = 60, accept_windows: int = 2
) -> int:
    """The member id inside a genuine, current token; raises `TokenError` otherwise."""
    _check_key(secret, merchant_id, window)
    if accept_windows < 1:
        raise ValueError("accept_windows must be >= 1")
    member_id, index, mac = _parse(token)
    expected = _mac(secret, merchant_id, member_id, index, window)
    if not hmac.compare_digest(expected.encode(), mac.encode()):
        raise TokenError("bad_mac")
    current = now // window
    if index > current:
        raise TokenError("future")
    if current - index >= accept_windows:
        raise TokenError("expired")
    return member_id


def _parse(token: object) -> tuple[int, int, str]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise TokenError("malformed")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed")
    member_text, index_text, mac = parts
    member_id = _decode(member_text)
    index = _decode(index_text)
    if not 1 <= member_id <= MAX_MEMBER_ID or index > MAX_MEMBER_ID:
        raise TokenError("malformed")
    if len(mac) != _MAC_CHARS or not _is_base62(mac):
        raise TokenError("malformed")
    return member_id, index, mac


def _decode(text: str) -> int:
    """Canonical base62 only: non-empty, no leading zeros, bounded length."""
    if not text or len(text) > _MAX_NUMBER_CHARS or not _is_base62(text) or (text[0] == "0" and text != "0"):
        raise TokenError("malformed")
    value = 0
    for char in text:
        value = value * 62 + _DIGIT[char]
    return value


def _is_base62(text: str) -> bool:
    return all(char in _DIGIT for char in text)


def _encode(value: int, width: int = 1) -> str:
    chars: list[str] = []
    while value:
        value, digit = divmod(value, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars)).rjust(width, "0")


def _mac(secret: bytes, merchant_id: int, member_id: int, index: int, window: int) -> str:
    message = _DOMAIN + struct.pack(">QQQQ", merchant_id, member_id, index, window)
    digest = hmac.new(secret, message, hashlib.sha256).digest()[:_MAC_BYTES]
    return _encode(int.from_bytes(digest, "big"), _MAC_CHARS)


def _check_key(secret: bytes, merchant_id: int, window: int) -> None:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"secret must be at least {MIN_SECRET_BYTES} bytes")
    if not 1 <= merchant_id <= MAX_MEMBER_ID:
        raise ValueError("merchant_id out of range")
    if window < 1:
        raise ValueError("window must be >= 1 second")
