"""Points-mall rules: item validation, whether a member may redeem, limits left, pick-up codes.

Pure: times are passed in (aware datetimes), counts are what the caller read under its locks.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit

from handlers.rules.errors import RuleError

PICKUP_CODE_LENGTH = 8
MAX_PRICE_POINTS = 10_000_000
MAX_CASH_FEN = 10_000_000
MAX_STORED_VALUE_FEN = 10_000_000
MAX_STOCK = 10_000_000
MAX_LIMIT = 10_000
MAX_PICKUP_DAYS = 365
MAX_QTY = 99


class Refusal(StrEnum):
    """Why a redemption is refused; the value is the request field it concerns."""

    INACTIVE = "item_id"
    WINDOW = "sale_window"
    TIER = "tier"
    STOCK = "stock"
    LIFETIME_LIMIT = "limit_per_member"
    DAY_LIMIT = "limit_per_day"

    @property
    def message(self) -> str:
        return REFUSAL_MESSAGES[self]


REFUSAL_MESSAGES = {
    Refusal.INACTIVE: "商品已下架",
    Refusal.WINDOW: "不在兑换时间内",
    Refusal.TIER: "等级不足，无法兑换该商品",
    Refusal.STOCK: "库存不足",
    Refusal.LIFETIME_LIMIT: "超过每人限兑数量",
    Refusal.DAY_LIMIT: "今日已达上限",
}


@dataclass(frozen=True, slots=True)
class ItemTerms:
    """What decides whether an item can be redeemed (a snapshot of the locked item row)."""

    active: bool
    stock: int
    min_tier_rank: int
    limit_per_member: int | None
    limit_per_day: int | None
    sale_starts_at: datetime | None
    sale_ends_at: datetime | None


@dataclass(frozen=True, slots=True)
class MemberStanding:
    """The member's tier rank and the units of the item they already hold (returned orders excluded)."""

    tier_rank: int
    bought_total: int
    bought_today: int


def in_window(starts_at: datetime | None, ends_at: datetime | None, now: datetime) -> bool:
    """`now` within [starts_at, ends_at); an open end is unbounded."""
    return (starts_at is None or starts_at <= now) and (ends_at is None or now < ends_at)


def remaining_limit(terms: ItemTerms, standing: MemberStanding) -> int | None:
    """Units the member may still redeem under the lifetime and daily limits; None: unlimited."""
    left = [
        limit - bought
        for limit, bought in (
            (terms.limit_per_member, standing.bought_total),
            (terms.limit_per_day, standing.bought_today),
        )
        if limit is not None
    ]
    return max(min(left), 0) if left else None


def refusal(
    terms: ItemTerms,
    standing: MemberStanding,
    qty: int,
    now: datetime,
    *,
    check_window: bool = True,
    check_stock: bool = True,
) -> Refusal | None:
    """The first rule that refuses `qty` units, or None. Checked in the order a member can act on."""
    if not terms.active:
        return Refusal.INACTIVE
    if check_window and not in_window(terms.sale_starts_at, terms.sale_ends_at, now):
        return Refusal.WINDOW
    if standing.tier_rank < terms.min_tier_rank:
        return Refusal.TIER
    if check_stock and terms.stock < qty:
        return Refusal.STOCK
    if terms.limit_per_member is not None and standing.bought_total + qty > terms.limit_per_member:
        return Refusal.LIFETIME_LIMIT
    if terms.limit_per_day is not None and standing.bought_today + qty > terms.limit_per_day:
        return Refusal.DAY_LIMIT
    return None


# Item validation ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """An item as an admin submits it (kind as its string value)."""

    kind: str
    price_points: int
    cash_fen: int = 0
    stored_value_fen: int = 0
    has_coupon_template: bool = False
    limit_per_member: int | None = None
    limit_per_day: int | None = None
    min_tier_rank: int = 0
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    image_url: str = ""
    pickup_days: int = 14


def _between(value: int, low: int, high: int, field: str, label: str) -> None:
    if not low <= value <= high:
        raise RuleError(field, f"{label}须在 {low}–{high} 之间")


def validate_item(spec: ItemSpec, *, max_tier_rank: int) -> None:
    """Raise RuleError naming the first invalid field of an item."""
    _between(spec.price_points, 1, MAX_PRICE_POINTS, "price_points", "积分价格")
    _between(spec.cash_fen, 0, MAX_CASH_FEN, "cash_fen", "现金部分")
    _between(spec.pickup_days, 1, MAX_PICKUP_DAYS, "pickup_days", "提货期限（天）")
    _between(spec.min_tier_rank, 0, max_tier_rank, "min_tier_rank", "最低等级")
    for field, limit in (("limit_per_member", spec.limit_per_member), ("limit_per_day", spec.limit_per_day)):
        if limit is not None:
            _between(limit, 1, MAX_LIMIT, field, "限兑数量")
    if spec.sale_starts_at and spec.sale_ends_at and spec.sale_ends_at <= spec.sale_starts_at:
        raise RuleError("sale_ends_at", "兑换结束时间须晚于开始时间")
    for moment, field in ((spec.sale_starts_at, "sale_starts_at"), (spec.sale_ends_at, "sale_ends_at")):
        if moment is not None and moment.utcoffset() is None:
            raise RuleError(field, "时间须带时区")
    if spec.image_url and not _https(spec.image_url):
        raise RuleError("image_url", "图片地址须为 https:// 链接")
    _validate_kind(spec)


def _validate_kind(spec: ItemSpec) -> None:
    if spec.kind == "coupon" and not spec.has_coupon_template:
        raise RuleError("coupon_template_id", "优惠券商品须指定优惠券模板")
    if spec.kind != "coupon" and spec.has_coupon_template:
        raise RuleError("coupon_template_id", "只有优惠券商品可以指定优惠券模板")
    if spec.kind == "stored_value":
        _between(spec.stored_value_fen, 1, MAX_STORED_VALUE_FEN, "stored_value_fen", "储值金额（分）")
    elif spec.stored_value_fen:
        raise RuleError("stored_value_fen", "只有储值商品可以设置储值金额")
    if spec.kind != "pickup" and spec.cash_fen:
        raise RuleError("cash_fen", "只有到店自提商品可以加收现金")


def _https(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(parts.hostname) and not any(ch.isspace() for ch in url)


# Pick-up codes ------------------------------------------------------------------------------------


def new_pickup_code(alphabet: str, choice: Callable[[str], str] = secrets.choice) -> str:
    """A random pick-up code of `PICKUP_CODE_LENGTH` characters from `alphabet`."""
    return "".join(choice(alphabet) for _ in range(PICKUP_CODE_LENGTH))


def normalise_pickup_code(raw: str) -> str:
    """What a cashier typed, as stored: upper case, spaces and dashes dropped."""
    return raw.strip().upper().replace("-", "").replace(" ", "")


def is_pickup_code(code: str, alphabet: str) -> bool:
    return len(code) == PICKUP_CODE_LENGTH and all(ch in alphabet for ch in code)
