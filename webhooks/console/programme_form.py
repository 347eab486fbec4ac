"""The tier ladder and the "other" programme settings as field-by-field forms.

Each input is named by the path the validators use for it (`tiers[1].criteria.spend_fen`,
`referral.level_points[0]`), so a refusal naming a path is shown next to the input of that name — or,
for a path no input has (a whole row, a list's item), next to the nearest one that holds it.
Amounts are typed in yuan and sent as fen; what is typed and not a number is sent as typed, for the
validator to refuse by name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from multidict import MultiDictProxy

from webhooks.console.base import fen_to_yuan, whole_number, yuan_to_fen

Values = dict[str, Any]  # an input's name → its text, or the list of a multi-select's choices
MAX_TIERS = 32
BLANK_ROWS = 2
REFERRAL_LEVELS = 5
METRICS = ("spend_fen", "recharge_fen", "points_earned")
MONEY = ("spend_fen", "recharge_fen")
TIER_TEXT = (
    "code",
    "name",
    "rank",
    "criteria.spend_fen",
    "criteria.recharge_fen",
    "criteria.points_earned",
    "upgrade_cost_points",
    "benefits.discount_percent",
    "benefits.points_multiplier",
    "benefits.birthday_gift_points",
    "benefits.upgrade_gift_points",
    "downgrade.every_days",
    "downgrade.grace_days",
    "downgrade.warn_days",
)
TIER_COUPONS = ("benefits.upgrade_gift_coupon_template_ids", "benefits.birthday_gift_coupon_template_ids")
TIER_FIELDS = frozenset((*TIER_TEXT, *TIER_COUPONS, "criteria", "downgrade.enabled", "remove"))
_ROW = re.compile(r"^tiers\[(\d+)\]")
_LAST = re.compile(r"(\.[^.\[\]]*|\[\d+\])$")
_PATH = re.compile(r"^[\w\[\].$]*$")


def yuan(fen: int | None) -> str:
    return "" if fen is None else fen_to_yuan(fen).replace(",", "")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _multi(data: MultiDictProxy[Any], name: str) -> list[str]:
    return [value for value in data.getall(name, []) if isinstance(value, str) and value.strip()]


def _ids(choices: list[str]) -> list[Any]:
    return [whole_number(choice) for choice in choices]


# Errors ------------------------------------------------------------------------------------------


def message_of(text: str) -> str:
    """A validator's message without the path it starts with ("tiers[1].rank: 须…" → "须…")."""
    head, sep, tail = text.partition(": ")
    return tail if sep and _PATH.match(head) else text


def placed(
    errors: Mapping[str, str], known: Callable[[str], bool], *, strip: str = "", fallback: str = "form"
) -> dict[str, str]:
    """Each error under the input it belongs to: its path, or the nearest enclosing path `known`."""
    shown: dict[str, str] = {}
    for key, message in errors.items():
        path = key.removeprefix(strip).rstrip(".")
        while path and not known(path):
            path = _LAST.sub("", path)
        shown.setdefault(path or fallback, message_of(message))
    return shown


# Tier ladder -------------------------------------------------------------------------------------


def tier_values(tiers: list[dict[str, Any]]) -> Values:
    """The ladder's form filled with the saved tiers, and blank rows to add one."""
    values: Values = {"rows": len(tiers) + BLANK_ROWS, "window_days": "365"}
    for index, tier in enumerate(tiers):
        row = f"tiers[{index}]"
        criteria = tier.get("criteria") or {}
        if criteria:
            values["window_days"] = _text(criteria.get("window_days"))
        for metric in METRICS:
            raw = criteria.get(metric)
            values[f"{row}.criteria.{metric}"] = yuan(raw) if metric in MONEY else _text(raw)
        for key in ("code", "name", "rank", "upgrade_cost_points"):
            values[f"{row}.{key}"] = _text(tier.get(key))
        for key, value in (tier.get("benefits") or {}).items():
            shown = [str(i) for i in value] if isinstance(value, list) else _text(value)
            values[f"{row}.benefits.{key}"] = shown
        downgrade = tier.get("downgrade") or {}
        for key in ("every_days", "grace_days", "warn_days"):
            values[f"{row}.downgrade.{key}"] = _text(downgrade.get(key))
        values[f"{row}.downgrade.enabled"] = "true" if downgrade.get("enabled") else ""
    return values


def typed_tier_values(data: MultiDictProxy[Any]) -> Values:
    """What was typed, to fill the form again after a refusal."""
    values: Values = {name: value for name, value in data.items() if isinstance(value, str)}
    for index in row_indices(data):
        for name in TIER_COUPONS:
            values[f"tiers[{index}].{name}"] = _multi(data, f"tiers[{index}].{name}")
    values["rows"] = max(row_indices(data), default=-1) + 1
    return values


def row_indices(data: Mapping[str, Any]) -> list[int]:
    found = {int(m.group(1)) for name in data if (m := _ROW.match(name))}
    return sorted(index for index in found if index < MAX_TIERS * 2)


def proposed_tiers(data: MultiDictProxy[Any]) -> tuple[list[dict[str, Any]], list[int]]:
    """The ladder the form proposes (rows left blank or marked to remove are left out), and for each
    tier the form row it came from."""
    tiers: list[dict[str, Any]] = []
    rows: list[int] = []
    for index in row_indices(data):
        row = f"tiers[{index}]"
        if data.get(f"{row}.remove") == "true":
            continue
        text = {key: str(data.get(f"{row}.{key}", "")).strip() for key in TIER_TEXT}
        coupons = {key: _multi(data, f"{row}.{key}") for key in TIER_COUPONS}
        if not any(text.values()) and not any(coupons.values()):
            continue
        previous = tiers[-1]["rank"] if tiers else -1
        tiers.append(_tier(text, coupons, data, row, previous))
        rows.append(index)
    return tiers, rows


def _tier(
    text: dict[str, str], coupons: dict[str, list[str]], data: Mapping[str, Any], row: str, previous: Any
) -> dict[str, Any]:
    rank = text["rank"]
    auto = previous + 1 if isinstance(previous, int) else 0
    tier: dict[str, Any] = {
        "code": text["code"],
        "name": text["name"],
        "rank": whole_number(rank) if rank else auto,
    }
    criteria: dict[str, Any] = {}
    for metric in METRICS:
        raw = text[f"criteria.{metric}"]
        if raw:
            criteria[metric] = yuan_to_fen(raw) if metric in MONEY else whole_number(raw)
    if criteria:
        criteria["window_days"] = whole_number(str(data.get("window_days", "")))
        tier["criteria"] = criteria
    if text["upgrade_cost_points"]:
        tier["upgrade_cost_points"] = whole_number(text["upgrade_cost_points"])
    benefits: dict[str, Any] = {}
    for key in ("discount_percent", "birthday_gift_points", "upgrade_gift_points"):
        if text[f"benefits.{key}"]:
            benefits[key] = whole_number(text[f"benefits.{key}"])
    if text["benefits.points_multiplier"]:
        benefits["points_multiplier"] = text["benefits.points_multiplier"]
    for key, choices in coupons.items():
        benefits[key.removeprefix("benefits.")] = _ids(choices)
    tier["benefits"] = benefits
    downgrade: dict[str, Any] = {"enabled": data.get(f"{row}.downgrade.enabled") == "true"}
    for key in ("every_days", "grace_days", "warn_days"):
        if text[f"downgrade.{key}"]:
            downgrade[key] = whole_number(text[f"downgrade.{key}"])
    tier["downgrade"] = downgrade
    return tier


def tier_errors(errors: Mapping[str, str], rows: list[int]) -> dict[str, str]:
    """The API's errors (`tiers[k]…`, k the tier's place in the ladder) under the form's inputs (the
    row the tier was typed in); every tier's window is the one `window_days` input."""

    def to_row(match: re.Match[str]) -> str:
        place = int(match.group(1))
        return f"tiers[{rows[place]}]" if place < len(rows) else match.group(0)

    moved = {_ROW.sub(to_row, key): message for key, message in errors.items()}
    moved = {re.sub(r"^tiers\[\d+\]\.criteria\.window_days$", "window_days", k): m for k, m in moved.items()}
    return placed(moved, _known_tier_field)


def _known_tier_field(path: str) -> bool:
    if path in ("window_days", "tiers"):
        return True
    match = _ROW.match(path)
    if match is None:
        return False
    rest = path[match.end() :].removeprefix(".")
    return rest == "" or rest in TIER_FIELDS


# Other programme settings ------------------------------------------------------------------------

OTHER_TEXT = (
    "expiry.kind",
    "expiry.months",
    "expiry.month",
    "expiry.day",
    "pending_days",
    "points_per_yuan_cash",
    "registration_bonus",
    "profile_bonus",
    "offset.min_points",
    "offset.max_percent",
    "offset.points_per_yuan",
    "referral.trigger",
    "earn_pool",
)
OTHER_FIELDS = frozenset(
    (
        *OTHER_TEXT,
        *(f"referral.level_points[{i}]" for i in range(REFERRAL_LEVELS)),
        "expiry",
        "offset",
        "offset.enabled",
        "referral",
        "referral.level_points",
        "new_member_coupon_template_ids",
    )
)
EXPIRY_FIELDS = {"never": (), "rolling_months": ("months",), "yearly_clearance": ("month", "day")}


def other_values(program: Mapping[str, Any]) -> Values:
    """The form filled with the saved settings."""
    expiry = program.get("expiry") or {}
    offset = program.get("offset") or {}
    referral = program.get("referral") or {}
    values: Values = {
        "expiry.kind": _text(expiry.get("kind")),
        **{f"expiry.{key}": _text(expiry.get(key)) for key in ("months", "month", "day")},
        **{key: _text(program.get(key)) for key in ("pending_days", "points_per_yuan_cash")},
        **{key: _text(program.get(key)) for key in ("registration_bonus", "profile_bonus", "earn_pool")},
        "offset.enabled": "true" if offset.get("enabled") else "",
        **{
            f"offset.{key}": _text(offset.get(key))
            for key in ("min_points", "max_percent", "points_per_yuan")
        },
        "referral.trigger": _text(referral.get("trigger")),
        "new_member_coupon_template_ids": [str(i) for i in program.get("new_member_coupon_template_ids", [])],
    }
    levels = list(referral.get("level_points", []))
    for index in range(REFERRAL_LEVELS):
        values[f"referral.level_points[{index}]"] = _text(levels[index]) if index < len(levels) else ""
    return values


def typed_other_values(data: MultiDictProxy[Any]) -> Values:
    values: Values = {name: value for name, value in data.items() if isinstance(value, str)}
    values["new_member_coupon_template_ids"] = _multi(data, "new_member_coupon_template_ids")
    return values


def proposed_other(data: MultiDictProxy[Any]) -> dict[str, Any]:
    """The programme's other keys as the form proposes them (the same shape as the JSON section)."""

    def text(name: str) -> str:
        return str(data.get(name, "")).strip()

    kind = text("expiry.kind")
    expiry: dict[str, Any] = {"kind": kind}
    for key in EXPIRY_FIELDS.get(kind, ()):
        expiry[key] = whole_number(text(f"expiry.{key}"))
    typed = [text(f"referral.level_points[{i}]") for i in range(REFERRAL_LEVELS)]
    used = max((i + 1 for i, raw in enumerate(typed) if raw), default=0)
    return {
        "expiry": expiry,
        **{key: whole_number(text(key)) for key in ("pending_days", "points_per_yuan_cash")},
        **{key: whole_number(text(key)) for key in ("registration_bonus", "profile_bonus")},
        "offset": {
            "enabled": data.get("offset.enabled") == "true",
            **{key: whole_number(text(f"offset.{key}")) for key in ("min_points", "max_percent")},
            "points_per_yuan": whole_number(text("offset.points_per_yuan")),
        },
        "referral": {
            "trigger": text("referral.trigger"),
            "level_points": [whole_number(raw) for raw in typed[:used]],
        },
        "earn_pool": text("earn_pool") or None,
        "new_member_coupon_template_ids": _ids(_multi(data, "new_member_coupon_template_ids")),
    }


def other_errors(errors: Mapping[str, str]) -> dict[str, str]:
    """The API's errors (`program.offset.min_points`) under the inputs; the rest under the form."""
    return placed(errors, OTHER_FIELDS.__contains__, strip="program.", fallback="other")
