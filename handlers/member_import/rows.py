"""One row of a member import, validated: the profile with the same validators as the member's own
(`handlers.members.profile`), the opening balances, and the row's identity.

- **Identity**: the merchant's member number (会员号, `external_id`, as written, trimmed) when the row has
  one, else the normalised mobile number (11 digits, `+86`, spaces and dashes removed). Duplicates within
  the file are found after staging (`handlers.member_import.apply`).
- **Opening points**: a whole number ≥ 0; its expiry (积分到期日) is a merchant-local date, the points
  lapsing at the end of that day; no date: the programme's expiry policy from the import's time. A date
  before today is refused.
- **Opening stored value** (储值本金): yuan with at most two decimals (128.50), stored as principal in fen.
- **Tier** (等级): a tier code or name of the merchant's current ladder.

A refused row carries the field and a Chinese reason; the first problem found is the one reported.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from handlers.core.errors import ValidationError
from handlers.loyalty.ledger import MAX_POSTING
from handlers.member_import.reader import Cell
from handlers.members.profile import (
    mask_phone,
    parse_birthday,
    parse_date,
    parse_gender,
    parse_name,
    parse_phone,
)
from handlers.rules.expiry import ExpiryPolicy, expiry_date
from handlers.rules.tiers_model import Tier
from handlers.rules.wallet import MAX_TOP_UP_FEN

MAX_EXTERNAL_ID = 64
MAX_OPENING_FEN = MAX_TOP_UP_FEN


@dataclass(frozen=True, slots=True)
class Context:
    """What validating a row needs to know about the merchant, read once per file."""

    now: datetime
    timezone: str
    expiry: ExpiryPolicy
    tiers: dict[str, str]  # a tier's code and its name (lower case) → its code

    @property
    def today(self) -> date:
        return self.now.astimezone(ZoneInfo(self.timezone)).date()

    @classmethod
    def build(cls, now: datetime, timezone: str, expiry: ExpiryPolicy, tiers: list[Tier]) -> Context:
        names = {t.name.strip().lower(): t.code for t in tiers}
        return cls(now, timezone, expiry, {**names, **{t.code.lower(): t.code for t in tiers}})


@dataclass(slots=True)
class Row:
    row_no: int
    external_id: str | None = None
    phone: str | None = None
    name: str | None = None
    birthday: date | None = None
    gender: str | None = None
    tier_code: str | None = None
    points: int = 0
    points_expire_at: datetime | None = None
    stored_value_fen: int = 0
    field: str = ""
    reason: str = ""  # set: the row is refused

    @property
    def rejected(self) -> bool:
        return bool(self.reason)

    @property
    def phone_masked(self) -> str:
        return mask_phone(self.phone)

    def profile_hash(self) -> str:
        """Digest of the profile fields the row gives: the same row imported again is recognised."""
        parts = (self.external_id, self.phone, self.name, self.birthday, self.gender, self.tier_code)
        text = "\x1f".join("" if part is None else str(part) for part in parts)
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _text(cell: Cell) -> str | None:
    if cell is None:
        return None
    return cell.isoformat() if isinstance(cell, date) else cell


def validate(row_no: int, cells: dict[str, Cell], ctx: Context) -> Row:
    """The row's values, or the row refused with the field and the reason of its first problem."""
    row = Row(row_no)
    try:
        _fill(row, cells, ctx)
    except ValidationError as exc:
        row.field, row.reason = exc.field or "", exc.message
    return row


def _fill(row: Row, cells: dict[str, Cell], ctx: Context) -> None:
    external_id = _text(cells.get("external_id"))
    if external_id is not None:
        if len(external_id) > MAX_EXTERNAL_ID or not external_id.isprintable():
            raise ValidationError(
                f"会员号须为 1–{MAX_EXTERNAL_ID} 个字符，且不含换行等控制字符", field="external_id"
            )
        row.external_id = external_id
    phone = _text(cells.get("phone"))
    if phone is not None:
        row.phone = parse_phone(phone)
    elif row.external_id is None:
        raise ValidationError("缺少手机号或会员号，无法识别会员", field="phone")
    if (name := _text(cells.get("name"))) is not None:
        row.name = parse_name(name)
    if (birthday := cells.get("birthday")) is not None:
        row.birthday = parse_birthday(birthday, today=ctx.today)
    if (gender := _text(cells.get("gender"))) is not None:
        row.gender = parse_gender(gender).value
    if (tier := _text(cells.get("tier"))) is not None:
        row.tier_code = ctx.tiers.get(tier.lower())
        if row.tier_code is None:
            known = "、".join(sorted(set(ctx.tiers.values())))
            raise ValidationError(f"未知的会员等级「{tier}」（可用：{known}）", field="tier")
    row.points = _points(cells.get("points"))
    if row.points:
        row.points_expire_at = _expiry(cells.get("points_expire_on"), ctx)
    row.stored_value_fen = _fen(cells.get("stored_value"))


def _points(cell: Cell) -> int:
    text = _text(cell)
    if text is None:
        return 0
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        raise ValidationError("积分须为整数", field="points") from None
    if not value.is_finite():
        raise ValidationError("积分须为整数", field="points")
    if value < 0:
        raise ValidationError("积分不能为负数", field="points")
    if value != value.to_integral_value():
        raise ValidationError("积分须为整数", field="points")
    if value > MAX_POSTING:
        raise ValidationError(f"积分不能超过 {MAX_POSTING}", field="points")
    return int(value)


def _expiry(cell: Cell, ctx: Context) -> datetime | None:
    """The end of the expiry day in the merchant's zone; none given: the programme's policy from now."""
    if cell is None:
        return expiry_date(ctx.now, ctx.expiry, ctx.timezone)
    day = parse_date(
        cell, field="points_expire_on", message="积分到期日格式不正确，请按 2027-12-31 的格式填写"
    )
    if day < ctx.today:
        raise ValidationError(
            f"积分到期日 {day.isoformat()} 已过，不能导入已过期的积分", field="points_expire_on"
        )
    return datetime.combine(day, time.max, ZoneInfo(ctx.timezone))


def _fen(cell: Cell) -> int:
    text = _text(cell)
    if text is None:
        return 0
    try:
        yuan = Decimal(text.replace(",", "").removeprefix("¥").removeprefix("￥"))
    except InvalidOperation:
        raise ValidationError("储值本金须为金额（元），如 128.50", field="stored_value") from None
    if not yuan.is_finite():
        raise ValidationError("储值本金须为金额（元），如 128.50", field="stored_value")
    if yuan < 0:
        raise ValidationError("储值本金不能为负数", field="stored_value")
    fen = yuan * 100
    if fen != fen.to_integral_value():
        raise ValidationError("储值本金最多两位小数（单位：元）", field="stored_value")
    if fen > MAX_OPENING_FEN:
        raise ValidationError(f"储值本金不能超过 {MAX_OPENING_FEN // 100} 元", field="stored_value")
    return int(fen)
