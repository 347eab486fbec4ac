"""Strict readers for JSON-like rule configuration; each failure names its field path.

Floats are never used for quantities: numbers arrive as ints, decimal strings ("1.5"),
fraction strings ("3/2") or, for convenience, JSON floats read through their shortest repr.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from datetime import date
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from handlers.rules.errors import RuleError

_DECIMAL = re.compile(r"\d{1,12}(\.\d{1,8})?")
_RATIO = re.compile(r"\d{1,12}/\d{1,12}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def obj(
    raw: object, path: str, *, required: Collection[str] = (), optional: Collection[str] = ()
) -> Mapping[str, object]:
    """A mapping with only known string keys and every required key present."""
    where = path or "$"
    if not isinstance(raw, Mapping):
        raise RuleError(where, "应为对象")
    allowed = set(required) | set(optional)
    for key in raw:
        if not isinstance(key, str) or key not in allowed:
            raise RuleError(join(path, str(key)), "未知字段")
    for key in required:
        if key not in raw:
            raise RuleError(join(path, key), "缺少必填字段")
    return raw


def items(raw: object, path: str) -> list[object]:
    if not isinstance(raw, list | tuple):
        raise RuleError(path, "应为数组")
    return list(raw)


def integer(raw: object, path: str, *, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RuleError(path, "应为整数")
    if lo is not None and raw < lo:
        raise RuleError(path, f"不能小于 {lo}")
    if hi is not None and raw > hi:
        raise RuleError(path, f"不能大于 {hi}")
    return raw


def opt_integer(raw: object, path: str, *, lo: int | None = None, hi: int | None = None) -> int | None:
    return None if raw is None else integer(raw, path, lo=lo, hi=hi)


def boolean(raw: object, path: str) -> bool:
    if not isinstance(raw, bool):
        raise RuleError(path, "应为布尔值")
    return raw


def text(raw: object, path: str, *, max_len: int = 64) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise RuleError(path, "应为非空字符串")
    if len(raw) > max_len:
        raise RuleError(path, f"长度不能超过 {max_len}")
    return raw


def fraction(raw: object, path: str, *, lo: Fraction, hi: Fraction) -> Fraction:
    """An exact rational in [lo, hi] from an int, a Decimal, a decimal/ratio string or a finite float."""
    if isinstance(raw, bool):
        raise RuleError(path, "应为数字")
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise RuleError(path, "应为有限数字")
        raw = repr(raw)
    if isinstance(raw, Decimal):
        if not raw.is_finite():
            raise RuleError(path, "应为有限数字")
        if raw.adjusted() > 12 or int(raw.as_tuple().exponent) < -8:
            raise RuleError(path, "数字位数过多")
        value = Fraction(raw)
    elif isinstance(raw, int):
        value = Fraction(raw)
    elif isinstance(raw, str):
        candidate = raw.strip()
        if candidate.startswith("-"):
            raise RuleError(path, "不能为负数")
        if not (_DECIMAL.fullmatch(candidate) or _RATIO.fullmatch(candidate)):
            raise RuleError(path, "应为数字，如 1.5 或 3/2")
        if _RATIO.fullmatch(candidate) and int(candidate.split("/")[1]) == 0:
            raise RuleError(path, "分母不能为 0")
        value = Fraction(candidate)
    else:
        raise RuleError(path, "应为数字")
    if value < lo:
        raise RuleError(path, "不能为负数" if value < 0 else f"不能小于 {fraction_text(lo)}")
    if value > hi:
        raise RuleError(path, f"不能大于 {fraction_text(hi)}")
    return value


def fraction_text(value: Fraction) -> str:
    """Exact decimal text when the fraction terminates ("1.5"), else "n/d"; parses back exactly."""
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1 or max(twos, fives) > 8:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    if places == 0:
        return str(value.numerator)
    scaled = abs(value.numerator) * 10**places // value.denominator
    whole, frac = divmod(scaled, 10**places)
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{str(frac).rjust(places, '0').rstrip('0')}"


def iso_date(raw: object, path: str) -> date:
    if not isinstance(raw, str) or not _ISO_DATE.fullmatch(raw):
        raise RuleError(path, "应为日期字符串 YYYY-MM-DD")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise RuleError(path, "日期不存在") from None


def timezone(raw: object, path: str) -> str:
    name = text(raw, path)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleError(path, "未知时区") from None
    return name
