"""Profile validation shared by the chat dialog and the mini-program API."""

from __future__ import annotations

import re
from datetime import date, datetime

from handlers.core.errors import ValidationError
from models.member import Gender

# Mainland China mobile numbers: 11 digits starting 1[3-9]; +86/86 prefixes, spaces and dashes accepted.
MOBILE = re.compile(r"^1[3-9][0-9]{9}$")
OLDEST_YEARS = 120
GENDER_WORDS = {
    **dict.fromkeys(("男", "男性", "先生", "male", "m", "1"), Gender.MALE),
    **dict.fromkeys(("女", "女性", "女士", "female", "f", "2"), Gender.FEMALE),
    **dict.fromkeys(("保密", "不透露", "undisclosed", "3"), Gender.UNDISCLOSED),
}
_DATE_SEPARATORS = re.compile(r"[./年月\s]+")


def parse_phone(raw: str) -> str:
    digits = re.sub(r"[\s-]", "", raw.strip())
    digits = digits.removeprefix("+86") if digits.startswith("+86") else digits
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    if not MOBILE.match(digits):
        raise ValidationError("手机号格式不正确，请输入 11 位中国大陆手机号", field="phone")
    return digits


def parse_date(raw: str | date, *, field: str, message: str) -> date:
    """Accepts 1990-05-20, 1990/5/20, 1990.5.20, 1990年5月20日, 19900520 or a date; else `message`."""
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    text = raw.strip().removesuffix("日")
    if re.fullmatch(r"\d{8}", text):
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    parts = _DATE_SEPARATORS.sub("-", text).strip("-").split("-")
    try:
        year, month, day = (int(part) for part in parts)
        return date(year, month, day)
    except ValueError as exc:
        raise ValidationError(message, field=field) from exc


def parse_birthday(raw: str | date, *, today: date) -> date:
    """A past date within `OLDEST_YEARS`, in any form `parse_date` accepts."""
    value = parse_date(raw, field="birthday", message="生日格式不正确，请按 1990-05-20 的格式输入")
    if value >= today:
        raise ValidationError("生日必须是过去的日期", field="birthday")
    if today.year - value.year > OLDEST_YEARS:
        raise ValidationError(f"生日不能早于 {OLDEST_YEARS} 年前", field="birthday")
    return value


def parse_gender(raw: str) -> Gender:
    gender = GENDER_WORDS.get(raw.strip().lower())
    if gender is None:
        raise ValidationError("请回复 男、女 或 保密", field="gender")
    return gender


def parse_name(raw: str) -> str:
    name = raw.strip()
    if not 1 <= len(name) <= 32 or any(ch in name for ch in "<>\n\r\t"):
        raise ValidationError("姓名须为 1–32 个字符", field="name")
    return name


def mask_phone(phone: str | None) -> str:
    return f"{phone[:3]}****{phone[-4:]}" if phone and len(phone) == 11 else ""
