"""A merchant's programme settings: expiry, pending window, offsets, bonuses, referrals, check-in.

Parsed strictly from JSON-like data (every failure names its field) and rendered back; the two
round-trip. Defaults are what a new merchant starts with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from handlers.rules import _parse as p
from handlers.rules.checkin import CheckinPolicy, checkin_policy_to_dict, validate_checkin_policy
from handlers.rules.errors import RuleError
from handlers.rules.expiry import ExpiryPolicy, RollingMonths, expiry_policy_to_dict, validate_expiry_policy
from handlers.rules.wallet import StoredValuePolicy, stored_value_to_dict, validate_stored_value

ReferralTrigger = Literal["first_purchase", "registration"]
MAX_REFERRAL_DEPTH = 5
MAX_POINTS = 1_000_000


@dataclass(frozen=True, slots=True)
class OffsetPolicy:
    """Paying part of an order with points at the till."""

    enabled: bool = True
    min_points: int = 100  # an offset below this is refused
    max_percent: int = 50  # of the order amount after discounts
    points_per_yuan: int = 100  # 100 points = 1 yuan off


@dataclass(frozen=True, slots=True)
class ReferralPolicy:
    trigger: ReferralTrigger = "first_purchase"
    level_points: tuple[int, ...] = (100, 30)  # level 1, level 2, …


@dataclass(frozen=True, slots=True)
class Program:
    expiry: ExpiryPolicy = field(default_factory=lambda: RollingMonths(12))
    pending_days: int = 0
    points_per_yuan_cash: int = 100  # what points cost the merchant: 100 points = 1 yuan
    registration_bonus: int = 100
    profile_bonus: int = 50
    offset: OffsetPolicy = field(default_factory=OffsetPolicy)
    referral: ReferralPolicy = field(default_factory=ReferralPolicy)
    checkin: CheckinPolicy = field(
        default_factory=lambda: CheckinPolicy(
            daily_points=5,
            streak_rewards={7: 50},
            cycle_days=7,
            makeup_cost_points=20,
            makeup_max_days_back=3,
            makeup_max_per_month=3,
        )
    )
    earn_pool: str | None = None  # a PointsPool code capping all purchase points
    new_member_coupon_template_ids: tuple[int, ...] = ()  # coupons every new member is given
    stored_value: StoredValuePolicy = field(default_factory=StoredValuePolicy)  # top-up bonus tiers


_TOP = (
    "expiry",
    "pending_days",
    "points_per_yuan_cash",
    "registration_bonus",
    "profile_bonus",
    "offset",
    "referral",
    "checkin",
    "earn_pool",
    "new_member_coupon_template_ids",
    "stored_value",
)
MAX_NEW_MEMBER_COUPONS = 20


def validate_program(raw: object) -> Program:
    top = p.obj(raw, "", optional=_TOP)
    default = Program()
    return Program(
        expiry=_nested(validate_expiry_policy, top, "expiry", default.expiry),
        pending_days=p.integer(top.get("pending_days", 0), "pending_days", lo=0, hi=90),
        points_per_yuan_cash=p.integer(
            top.get("points_per_yuan_cash", 100), "points_per_yuan_cash", lo=1, hi=100_000
        ),
        registration_bonus=p.integer(
            top.get("registration_bonus", 0), "registration_bonus", lo=0, hi=MAX_POINTS
        ),
        profile_bonus=p.integer(top.get("profile_bonus", 0), "profile_bonus", lo=0, hi=MAX_POINTS),
        offset=_offset(top.get("offset", {})),
        referral=_referral(top.get("referral", {"level_points": []})),
        checkin=_nested(validate_checkin_policy, top, "checkin", default.checkin),
        earn_pool=p.text(top["earn_pool"], "earn_pool") if top.get("earn_pool") else None,
        new_member_coupon_template_ids=_template_ids(top.get("new_member_coupon_template_ids", [])),
        stored_value=_nested(validate_stored_value, top, "stored_value", default.stored_value),
    )


def program_to_dict(program: Program) -> dict[str, Any]:
    return {
        "expiry": expiry_policy_to_dict(program.expiry),
        "pending_days": program.pending_days,
        "points_per_yuan_cash": program.points_per_yuan_cash,
        "registration_bonus": program.registration_bonus,
        "profile_bonus": program.profile_bonus,
        "offset": {
            "enabled": program.offset.enabled,
            "min_points": program.offset.min_points,
            "max_percent": program.offset.max_percent,
            "points_per_yuan": program.offset.points_per_yuan,
        },
        "referral": {
            "trigger": program.referral.trigger,
            "level_points": list(program.referral.level_points),
        },
        "checkin": checkin_policy_to_dict(program.checkin),
        "earn_pool": program.earn_pool,
        "new_member_coupon_template_ids": list(program.new_member_coupon_template_ids),
        "stored_value": stored_value_to_dict(program.stored_value),
    }


def _nested(parse: Any, top: Any, key: str, default: Any) -> Any:
    if key not in top:
        return default
    try:
        return parse(top[key])
    except RuleError as exc:
        raise RuleError(p.join(key, exc.field), exc.message) from None


def _offset(raw: object) -> OffsetPolicy:
    top = p.obj(raw, "offset", optional=("enabled", "min_points", "max_percent", "points_per_yuan"))
    return OffsetPolicy(
        enabled=p.boolean(top.get("enabled", True), "offset.enabled"),
        min_points=p.integer(top.get("min_points", 100), "offset.min_points", lo=1, hi=MAX_POINTS),
        max_percent=p.integer(top.get("max_percent", 50), "offset.max_percent", lo=1, hi=100),
        points_per_yuan=p.integer(
            top.get("points_per_yuan", 100), "offset.points_per_yuan", lo=1, hi=100_000
        ),
    )


def _referral(raw: object) -> ReferralPolicy:
    top = p.obj(raw, "referral", optional=("trigger", "level_points"))
    trigger = top.get("trigger", "first_purchase")
    if trigger not in ("first_purchase", "registration"):
        raise RuleError("referral.trigger", "应为 first_purchase 或 registration")
    levels = p.items(top.get("level_points", []), "referral.level_points")
    if len(levels) > MAX_REFERRAL_DEPTH:
        raise RuleError("referral.level_points", f"最多 {MAX_REFERRAL_DEPTH} 级")
    return ReferralPolicy(
        trigger=trigger,
        level_points=tuple(
            p.integer(v, f"referral.level_points[{i}]", lo=0, hi=MAX_POINTS) for i, v in enumerate(levels)
        ),
    )


def _template_ids(raw: object) -> tuple[int, ...]:
    path = "new_member_coupon_template_ids"
    values = p.items(raw, path)
    if len(values) > MAX_NEW_MEMBER_COUPONS:
        raise RuleError(path, f"最多 {MAX_NEW_MEMBER_COUPONS} 个券模板")
    ids = tuple(p.integer(v, p.join(path, i), lo=1) for i, v in enumerate(values))
    if len(set(ids)) != len(ids):
        raise RuleError(path, "券模板重复")
    return ids
