"""The member card: the rotating QR token, its PNG/SVG images, the staff scan, and the H5 card link.

The QR carries a `handlers.rules.cardtoken` token that rotates every 60 seconds and is accepted for
two windows (60–120 s), so a screenshot stops working within two minutes; the static member code
printed under it is the typed fallback at the till. `resolve_scan` accepts either.

The H5 card page link carries its own short-lived signed token (merchant, member, expiry; HMAC with
the app secret under a separate domain tag), never the openid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import cast

import qrcode
import qrcode.image.svg
from qrcode.image.pil import PilImage

from handlers.core.errors import DomainError, ErrorCode, Forbidden, NotFound, ValidationError
from handlers.members import lookup as members
from handlers.rules import cardtoken
from handlers.rules.tiers_model import Benefits
from models.member import Member
from models.merchant import Merchant

CARD_WINDOW_SECONDS = 60
CARD_ACCEPT_WINDOWS = 2
LINK_TTL_SECONDS = 600
MAX_SCAN_CHARS = 64
MAX_CODE_CHARS = 16  # Member.code's column width
CARD_LINK = b"memberbot/card-link/v1\x00"
INVITE_LINK = b"memberbot/invite-link/v1\x00"  # the invite page's links (a card link never opens it)
_LINK_MAC_BYTES = 16

# Scan failures a cashier must be able to tell apart. Not (yet) members of the shared ErrorCode enum:
# DomainError passes any code through, and the HTTP layer answers an unmapped code with 400.
CARD_EXPIRED = ErrorCode.CARD_EXPIRED
CARD_INVALID = ErrorCode.CARD_INVALID


@dataclass(frozen=True, slots=True)
class CardToken:
    token: str
    expires_in: int  # seconds until a scan refuses this token
    refresh_in: int  # seconds until a fresher token exists (show the new one then)


def _unix(now: datetime | int) -> int:
    if isinstance(now, datetime):
        if now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        return int(now.timestamp())
    return now


def issue_token(merchant: Merchant, member_id: int, *, secret: bytes, now: datetime | int) -> CardToken:
    """The member's current card token."""
    unix = _unix(now)
    token = cardtoken.issue(secret, merchant.id, member_id, unix, CARD_WINDOW_SECONDS)
    window_end = (unix // CARD_WINDOW_SECONDS + 1) * CARD_WINDOW_SECONDS
    accepted_until = window_end + (CARD_ACCEPT_WINDOWS - 1) * CARD_WINDOW_SECONDS
    return CardToken(token, accepted_until - unix, window_end - unix)


async def resolve_scan(
    merchant: Merchant, qr_or_code: str, *, secret: bytes, now: datetime | int, field: str = "code"
) -> Member:
    """The member behind a scanned card QR or a typed member code, within `merchant` only.

    Raises DomainError: `card_expired` (an old QR, ask for a refresh), `card_invalid` (not a card
    of this merchant, or forged), `member_not_found` (an unknown code), `validation_error` (empty).
    Every one names `field`: the input the text came from (`qr` or `member_code` at the till).
    """
    text = qr_or_code.strip()
    if not text or len(text) > MAX_SCAN_CHARS:
        raise ValidationError("请扫描会员码或输入会员号", field=field)
    if "." not in text:
        code = members.normalise_code(text)
        if not (code.isascii() and code.isalnum() and len(code) <= MAX_CODE_CHARS):
            raise NotFound("会员不存在，请核对会员号", code=ErrorCode.MEMBER_NOT_FOUND, field=field)
        return await members.resolve(merchant, code=code, field=field)
    try:
        member_id = cardtoken.verify(
            secret, merchant.id, text, _unix(now), CARD_WINDOW_SECONDS, CARD_ACCEPT_WINDOWS
        )
    except cardtoken.TokenError as exc:
        if exc.reason == "expired":
            raise DomainError("会员码已过期，请会员刷新后重新出示", code=CARD_EXPIRED, field=field) from None
        raise DomainError("无法识别的会员码，请确认是本店会员卡", code=CARD_INVALID, field=field) from None
    try:
        return await members.resolve(merchant, member_id=member_id, field=field)
    except NotFound:  # a token signed for a member since erased reads as no card of ours
        raise DomainError("无法识别的会员码，请确认是本店会员卡", code=CARD_INVALID, field=field) from None


def qr_png(data: str, *, box_size: int = 8) -> bytes:
    """A QR code PNG (medium error correction, standard 4-module quiet zone)."""
    image = qrcode.make(
        data,
        image_factory=PilImage,
        box_size=box_size,
        border=4,
        error_correction=qrcode.constants.ERROR_CORRECT_M,
    )
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue()


def qr_svg(data: str) -> str:
    """A standalone SVG document of the QR code (one path, scales without blur)."""
    image = qrcode.make(
        data,
        image_factory=qrcode.image.svg.SvgPathFillImage,
        box_size=10,
        border=4,
        error_correction=qrcode.constants.ERROR_CORRECT_M,
    )
    return cast(str, image.to_string(encoding="unicode"))


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


# The H5 card link --------------------------------------------------------------------------------


def _link_mac(secret: bytes, merchant_id: int, member_id: int, expires: int, domain: bytes) -> str:
    message = domain + f"{merchant_id}:{member_id}:{expires}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()[:_LINK_MAC_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def link_token(
    secret: bytes,
    merchant_id: int,
    member_id: int,
    *,
    now: datetime | int,
    ttl: int = LINK_TTL_SECONDS,
    domain: bytes = CARD_LINK,
) -> str:
    """`<member_id>.<expires unix>.<mac>`: opens the member's card page (or the page of `domain`) until
    it expires."""
    expires = _unix(now) + ttl
    return f"{member_id}.{expires}.{_link_mac(secret, merchant_id, member_id, expires, domain)}"


def verify_link(
    secret: bytes, merchant_id: int, token: str, *, now: datetime | int, domain: bytes = CARD_LINK
) -> int:
    """The member id of a genuine, unexpired link of this merchant for `domain`; Forbidden otherwise."""
    parts = token.split(".") if len(token) <= 64 else []
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 18 for p in parts[:2]):
        raise Forbidden("链接无效", field="t")
    member_id, expires = int(parts[0]), int(parts[1])
    expected = _link_mac(secret, merchant_id, member_id, expires, domain)
    if not hmac.compare_digest(expected.encode(), parts[2].encode()):
        raise Forbidden("链接无效", field="t")
    if expires <= _unix(now):
        raise Forbidden("链接已过期", field="t")
    return member_id


def card_url(base_url: str, merchant_slug: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/card/{merchant_slug}?t={token}"


# What the card says about the tier -----------------------------------------------------------------


def multiplier_text(value: Fraction) -> str:
    """1.5 for Fraction(3, 2); at most two decimals."""
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


def benefit_lines(benefits: Benefits) -> list[str]:
    """A tier's benefits as short sentences for the card page, the chat and the mini-program."""
    lines: list[str] = []
    if benefits.discount_percent < 100:
        lines.append(f"消费享 {benefits.discount_percent / 10:g} 折")
    if benefits.points_multiplier != 1:
        lines.append(f"消费积分 {multiplier_text(benefits.points_multiplier)} 倍")
    if benefits.birthday_gift_points:
        lines.append(f"生日礼 {benefits.birthday_gift_points} 积分")
    if benefits.upgrade_gift_points:
        lines.append(f"升级礼 {benefits.upgrade_gift_points} 积分")
    if benefits.upgrade_gift_coupon_template_ids:
        lines.append(f"升级赠券 {len(benefits.upgrade_gift_coupon_template_ids)} 张")
    return lines
