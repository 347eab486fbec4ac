"""Automatic tag rules: what a rule may say (validated and normalised here), the classic RFM segments,
and the date arithmetic of age bands. Pure: the SQL that evaluates a rule is `handlers.tags.rule_sql`.

A rule is a JSON object with a `type`:

- `rfm`: the members with at least one completed purchase in the last `window_days` whose recency
  (last purchase within `recency_days`), frequency (at least `frequency` purchases) and monetary value
  (at least `monetary_fen` paid) — each high or low — make `segment`, one of the eight classic segments.
- `tier` (`tiers`), `gender` (`genders`), `source` (`sources`): the member's value is one of those.
- `age` (`min_age` / `max_age`, either open), `birthday_month` (`months`).
- `store` (`store_ids`: the acquiring store), `staff` (`staff_ids`: the acquiring staff).
- `preference`: over the last `window_days`, the member's most-bought (by paid amount) `category` or
  `sku` (`by`) is one of `values`.
- `avg_ticket`: the average paid amount per completed purchase in the last `window_days` lies within
  `min_fen` / `max_fen`.
- `churn`: the last visit (purchase or check-in) is more than `days` days ago.
- `points`: the points balance lies within `min` / `max`.
- `unused_coupon`: holds an issued, unexpired coupon (of one of `template_ids`, when given).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import date
from typing import Any

from handlers.rules import _parse as p
from handlers.rules.errors import RuleError

# (recency high, frequency high, monetary high) -> the segment's name.
RFM_SEGMENTS: dict[tuple[bool, bool, bool], str] = {
    (True, True, True): "重要价值客户",
    (True, False, True): "重要发展客户",
    (False, True, True): "重要保持客户",
    (False, False, True): "重要挽留客户",
    (True, True, False): "一般价值客户",
    (True, False, False): "一般发展客户",
    (False, True, False): "一般保持客户",
    (False, False, False): "一般挽留客户",
}
RFM_BANDS = {name: bands for bands, name in RFM_SEGMENTS.items()}
TYPES = (
    "rfm",
    "tier",
    "gender",
    "age",
    "birthday_month",
    "source",
    "store",
    "staff",
    "preference",
    "avg_ticket",
    "churn",
    "points",
    "unused_coupon",
)
MAX_WINDOW_DAYS = 3 * 366
MAX_VALUES = 100
MAX_FEN = 10**12
MAX_POINTS = 2**31 - 1


def rfm_segment(recent: bool, frequent: bool, big: bool) -> str:
    return RFM_SEGMENTS[(recent, frequent, big)]


def _ints(raw: object, path: str, *, lo: int = 1, hi: int = 2**31 - 1) -> list[int]:
    values = p.items(raw, path)
    if not 1 <= len(values) <= MAX_VALUES:
        raise RuleError(path, f"应有 1–{MAX_VALUES} 项")
    out = [p.integer(value, p.join(path, i), lo=lo, hi=hi) for i, value in enumerate(values)]
    return sorted(set(out))


def _strings(raw: object, path: str, known: Collection[str] | None = None, *, max_len: int = 64) -> list[str]:
    values = p.items(raw, path)
    if not 1 <= len(values) <= MAX_VALUES:
        raise RuleError(path, f"应有 1–{MAX_VALUES} 项")
    out: list[str] = []
    for i, value in enumerate(values):
        where = p.join(path, i)
        if not isinstance(value, str) or not value.strip() or len(value) > max_len:
            raise RuleError(where, f"应为 1–{max_len} 个字符的文本")
        if "\x00" in value:
            raise RuleError(where, "不能含控制字符")
        if known is not None and value not in known:
            raise RuleError(where, f"可选值为：{'、'.join(sorted(known))}")
        out.append(value.strip())
    return sorted(set(out))


def _range(
    raw: Mapping[str, object], low: str, high: str, *, lo: int, hi: int
) -> tuple[int | None, int | None]:
    first = p.integer(raw[low], low, lo=lo, hi=hi) if raw.get(low) is not None else None
    last = p.integer(raw[high], high, lo=lo, hi=hi) if raw.get(high) is not None else None
    if first is None and last is None:
        raise RuleError(low, f"{low} 与 {high} 至少填一个")
    if first is not None and last is not None and first > last:
        raise RuleError(low, f"不能大于 {high}")
    return first, last


def _window(raw: Mapping[str, object]) -> int:
    return p.integer(raw["window_days"], "window_days", lo=1, hi=MAX_WINDOW_DAYS)


def parse_rule(raw: object, known: Mapping[str, Collection[str]] | None = None) -> dict[str, Any]:
    """The rule, validated and normalised (sorted, de-duplicated lists; open bounds as None).

    `known` optionally lists the values a field may take (`tiers`, `sources`, `genders`), as the
    merchant's configuration has them. Raises RuleError naming the field."""
    known = known or {}
    head = p.obj(raw, "", required=("type",), optional=_FIELDS_ANY)
    kind = head["type"]
    if kind not in TYPES:
        raise RuleError("type", f"可选值为：{'、'.join(TYPES)}")
    required, optional = _FIELDS[str(kind)]
    rule = p.obj(raw, "", required=("type", *required), optional=optional)
    out: dict[str, Any] = {"type": kind}
    match kind:
        case "rfm":
            window = _window(rule)
            segment = rule["segment"]
            if segment not in RFM_BANDS:
                raise RuleError("segment", f"可选值为：{'、'.join(RFM_SEGMENTS.values())}")
            out.update(
                window_days=window,
                segment=segment,
                recency_days=p.integer(rule["recency_days"], "recency_days", lo=1, hi=window),
                frequency=p.integer(rule["frequency"], "frequency", lo=1, hi=100_000),
                monetary_fen=p.integer(rule["monetary_fen"], "monetary_fen", lo=1, hi=MAX_FEN),
            )
        case "tier":
            out["tiers"] = _strings(rule["tiers"], "tiers", known.get("tiers"), max_len=32)
        case "gender":
            out["genders"] = _strings(rule["genders"], "genders", known.get("genders"), max_len=16)
        case "source":
            out["sources"] = _strings(rule["sources"], "sources", known.get("sources"), max_len=16)
        case "age":
            out["min_age"], out["max_age"] = _range(rule, "min_age", "max_age", lo=0, hi=150)
        case "birthday_month":
            out["months"] = _ints(rule["months"], "months", lo=1, hi=12)
        case "store":
            out["store_ids"] = _ints(rule["store_ids"], "store_ids")
        case "staff":
            out["staff_ids"] = _ints(rule["staff_ids"], "staff_ids")
        case "preference":
            by = rule["by"]
            if by not in ("category", "sku"):
                raise RuleError("by", "可选值为：category、sku")
            out.update(by=by, values=_strings(rule["values"], "values"), window_days=_window(rule))
        case "avg_ticket":
            out["window_days"] = _window(rule)
            out["min_fen"], out["max_fen"] = _range(rule, "min_fen", "max_fen", lo=0, hi=MAX_FEN)
        case "churn":
            out["days"] = p.integer(rule["days"], "days", lo=1, hi=10 * 366)
        case "points":
            out["min"], out["max"] = _range(rule, "min", "max", lo=0, hi=MAX_POINTS)
        case "unused_coupon":
            ids = rule.get("template_ids")
            out["template_ids"] = _ints(ids, "template_ids") if ids is not None else None
    return out


_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "rfm": (("window_days", "segment", "recency_days", "frequency", "monetary_fen"), ()),
    "tier": (("tiers",), ()),
    "gender": (("genders",), ()),
    "source": (("sources",), ()),
    "age": ((), ("min_age", "max_age")),
    "birthday_month": (("months",), ()),
    "store": (("store_ids",), ()),
    "staff": (("staff_ids",), ()),
    "preference": (("by", "values", "window_days"), ()),
    "avg_ticket": (("window_days",), ("min_fen", "max_fen")),
    "churn": (("days",), ()),
    "points": ((), ("min", "max")),
    "unused_coupon": ((), ("template_ids",)),
}
_FIELDS_ANY = tuple(sorted({name for req, opt in _FIELDS.values() for name in (*req, *opt)}))


def birthday_bounds(today: date, min_age: int | None, max_age: int | None) -> tuple[date | None, date | None]:
    """The birthdays of the people aged `min_age`..`max_age` (whole years, both included) on `today`:
    (born on or after, born on or before); None where open. A 29 February birthday counts as 1 March
    in common years."""
    latest = _years_before(today, min_age) if min_age is not None else None
    earliest = None
    if max_age is not None:
        # Aged at most max_age: not yet max_age + 1, i.e. born after today minus (max_age + 1) years.
        earliest = date.fromordinal(_years_before(today, max_age + 1).toordinal() + 1)
    return earliest, latest


def _years_before(today: date, years: int) -> date:
    year = today.year - years
    if today.month == 2 and today.day == 29:
        try:
            return date(year, 2, 29)
        except ValueError:
            return date(year, 2, 28)
    return date(year, today.month, today.day)
