"""Coupon rules: template checks, validity windows, applicability and the discount. Pure.

Kinds: `fixed` (满100减20: `amount_off_fen` off an order of at least `threshold_fen`; with threshold 0
it is 无门槛), `percent` (`percent_off` 1–99 off the order, floored to the fen, at most `cap_fen`),
`gift` (a gift item handed over at the till, nothing off). Every kind honours `threshold_fen`.

A coupon is usable in the half-open window [valid_from, valid_until). A template's validity is either
fixed instants or `valid_days`: the coupon then runs from its issue until the end of the merchant-local
day `valid_days` days after the issue day (1 day issued on 1 May 14:00 → usable until 2 May 24:00).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from handlers.rules.errors import RuleError

FIXED, PERCENT, GIFT = "fixed", "percent", "gift"
KINDS = (FIXED, PERCENT, GIFT)
MAX_FEN = 100_000_000  # 1,000,000 yuan
MAX_VALID_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Terms:
    """What a coupon gives, and on which orders."""

    kind: str
    threshold_fen: int = 0
    amount_off_fen: int = 0
    percent_off: int = 0
    cap_fen: int | None = None
    gift_name: str = ""


@dataclass(frozen=True, slots=True)
class Validity:
    """Exactly one of: both fixed instants, or `days` from issue."""

    valid_from: datetime | None = None
    valid_until: datetime | None = None
    days: int | None = None


@dataclass(frozen=True, slots=True)
class Window:
    valid_from: datetime
    valid_until: datetime
    store_codes: tuple[str, ...] | None = None  # None: every store


def check_terms(terms: Terms) -> None:
    """Raise a RuleError naming the field unless the terms make sense for their kind."""
    if terms.kind not in KINDS:
        raise RuleError("kind", "应为 fixed、percent 或 gift")
    _within(terms.threshold_fen, "threshold_fen", 0)
    irrelevant = {
        FIXED: ("percent_off", "cap_fen", "gift_name"),
        PERCENT: ("amount_off_fen", "gift_name"),
        GIFT: ("amount_off_fen", "percent_off", "cap_fen"),
    }[terms.kind]
    defaults = Terms(kind=terms.kind)
    for name in irrelevant:
        if getattr(terms, name) != getattr(defaults, name):
            raise RuleError(name, f"{KIND_NAMES[terms.kind]}不能设置此项")
    if terms.kind == FIXED:
        _within(terms.amount_off_fen, "amount_off_fen", 1)
        if terms.threshold_fen and terms.amount_off_fen > terms.threshold_fen:
            raise RuleError("amount_off_fen", "减免金额不能超过使用门槛")
    elif terms.kind == PERCENT:
        if not 1 <= terms.percent_off <= 99:
            raise RuleError("percent_off", "应为 1–99 之间的整数（20 表示减 20%，即 8 折）")
        if terms.cap_fen is not None:
            _within(terms.cap_fen, "cap_fen", 1)
    elif not terms.gift_name.strip():
        raise RuleError("gift_name", "请填写赠品名称")


def check_validity(validity: Validity) -> None:
    fixed = validity.valid_from is not None or validity.valid_until is not None
    if fixed == (validity.days is not None):
        raise RuleError("valid_days", "请设置固定有效期（valid_from 和 valid_until）或领取后有效天数，二选一")
    if validity.days is not None:
        if not 1 <= validity.days <= MAX_VALID_DAYS:
            raise RuleError("valid_days", f"应为 1–{MAX_VALID_DAYS} 天")
        return
    if validity.valid_from is None:
        raise RuleError("valid_from", "固定有效期需要开始时间")
    if validity.valid_until is None:
        raise RuleError("valid_until", "固定有效期需要结束时间")
    for name, moment in (("valid_from", validity.valid_from), ("valid_until", validity.valid_until)):
        if moment.utcoffset() is None:
            raise RuleError(name, "时间需带时区")
    if validity.valid_until <= validity.valid_from:
        raise RuleError("valid_until", "结束时间应晚于开始时间")


def _within(value: int, field: str, lo: int) -> None:
    if not lo <= value <= MAX_FEN:
        raise RuleError(field, f"应为 {lo}–{MAX_FEN} 分")


def window(validity: Validity, *, issued_at: datetime, timezone: str) -> tuple[datetime, datetime]:
    """The [valid_from, valid_until) a coupon issued at `issued_at` gets."""
    if validity.days is None:
        if validity.valid_from is None or validity.valid_until is None:
            raise ValueError("validity has neither fixed instants nor days")
        return validity.valid_from, validity.valid_until
    zone = ZoneInfo(timezone)
    last_day = issued_at.astimezone(zone).date() + timedelta(days=validity.days)
    return issued_at, day_start(last_day + timedelta(days=1), zone)


def day_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone)


def discount(terms: Terms, order_fen: int) -> int:
    """What the coupon takes off an order it applies to: never more than the order or the cap."""
    if order_fen <= 0:
        return 0
    if terms.kind == FIXED:
        return min(terms.amount_off_fen, order_fen)
    if terms.kind == PERCENT:
        off = order_fen * terms.percent_off // 100
        return off if terms.cap_fen is None else min(off, terms.cap_fen)
    return 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a coupon cannot be used: `expired` (past its window) or `not_applicable` (with the reason)."""

    code: str
    reason: str


def refusal(
    terms: Terms, window_: Window, *, order_fen: int, store_code: str | None, now: datetime, timezone: str
) -> Refusal | None:
    """None when the coupon applies to this order now; else why not (in Chinese)."""
    if now >= window_.valid_until:
        return Refusal("expired", "优惠券已过期")
    if now < window_.valid_from:
        start = window_.valid_from.astimezone(ZoneInfo(timezone))
        return Refusal("not_applicable", f"{start:%Y-%m-%d %H:%M} 起可用")
    if window_.store_codes is not None and store_code not in window_.store_codes:
        return Refusal("not_applicable", "本门店不可使用该券")
    if order_fen < terms.threshold_fen:
        return Refusal("not_applicable", f"满 {yuan(terms.threshold_fen)} 元可用")
    return None


KIND_NAMES = {FIXED: "满减券", PERCENT: "折扣券", GIFT: "赠品券"}


def yuan(fen: int) -> str:
    """100.00-style money text."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def short_yuan(fen: int) -> str:
    """Money without trailing zeros: 10000 → "100", 9950 → "99.5"."""
    text = yuan(fen)
    return text.rstrip("0").rstrip(".") if "." in text else text


def fold_text(percent_off: int) -> str:
    """20% off → "8折", 15% off → "8.5折", 5% off → "9.5折"."""
    pay = 100 - percent_off
    return f"{pay // 10}折" if pay % 10 == 0 else f"{pay // 10}.{pay % 10}折"


def describe(terms: Terms) -> str:
    """A short Chinese description: 满100减20, 无门槛减5元, 8折（最高减50元）, 满100赠咖啡一杯."""
    door = f"满{short_yuan(terms.threshold_fen)}" if terms.threshold_fen else ""
    if terms.kind == FIXED:
        off = short_yuan(terms.amount_off_fen)
        return f"{door}减{off}" if door else f"无门槛减{off}元"
    if terms.kind == PERCENT:
        text = f"{door}享{fold_text(terms.percent_off)}" if door else fold_text(terms.percent_off)
        return text + (f"（最高减{short_yuan(terms.cap_fen)}元）" if terms.cap_fen is not None else "")
    return f"{door}赠{terms.gift_name}" if door else f"赠{terms.gift_name}"


def _moment_text(moment: datetime, zone: ZoneInfo, *, end: bool) -> str:
    local = moment.astimezone(zone)
    if local.time() == time():  # a day boundary: an exclusive end means "through the day before"
        return (local.date() - timedelta(days=1) if end else local.date()).isoformat()
    return local.strftime("%Y-%m-%d %H:%M")


def until_text(valid_until: datetime, timezone: str) -> str:
    """The last day (or minute) a coupon is usable, merchant-local: "2024-05-31", "2024-06-01 14:30"."""
    return _moment_text(valid_until, ZoneInfo(timezone), end=True)


def validity_text(valid_from: datetime, valid_until: datetime, timezone: str) -> str:
    """ "2024-05-01 至 2024-05-31" (whole days), or with times when the window does not fall on midnight."""
    zone = ZoneInfo(timezone)
    return f"{_moment_text(valid_from, zone, end=False)} 至 {_moment_text(valid_until, zone, end=True)}"
