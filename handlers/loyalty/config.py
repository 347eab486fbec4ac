"""Reading and replacing a merchant's loyalty configuration: programme, earn rules, tiers.

Rule sets and tier ladders are immutable versions: a save writes version N+1 and every purchase
records the version its points came from. A new merchant reads the documented defaults (written
as version 1 on first use).

Reads are cached per process (`handlers.core.config_cache`: the parsed values are immutable, and a
change is announced to every process): the till and the chat bot read the configuration on every
purchase and check-in. A save in this process drops the merchant's entries at once. Each purchase
still records the rule-set version it actually used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core import audit_log, config_cache
from handlers.core.errors import Conflict, NotFound, ValidationError
from handlers.rules.earn_config import rule_set_to_dict, validate_rule_set
from handlers.rules.earn_model import RuleSet
from handlers.rules.errors import RuleError
from handlers.rules.program import Program, program_to_dict, validate_program
from handlers.rules.tiers_config import tiers_to_dicts, validate_tiers
from handlers.rules.tiers_model import Tier
from models.loyalty import LoyaltyProgram, RuleSetVersion, TierSetVersion

DEFAULT_RULES: dict[str, Any] = {
    "points_per_yuan": 1,
    "tier_multipliers": {"silver": "1.2", "gold": "1.5", "diamond": "2"},
}
_YEAR = 365
DEFAULT_TIERS: list[dict[str, Any]] = [
    {"code": "normal", "name": "普通会员", "rank": 0},
    {
        "code": "silver",
        "name": "银卡",
        "rank": 1,
        "criteria": {"window_days": _YEAR, "spend_fen": 100_000},
        "benefits": {"discount_percent": 98, "points_multiplier": "1.2", "birthday_gift_points": 100},
    },
    {
        "code": "gold",
        "name": "金卡",
        "rank": 2,
        "criteria": {"window_days": _YEAR, "spend_fen": 500_000},
        "upgrade_cost_points": 5000,
        "benefits": {
            "discount_percent": 95,
            "points_multiplier": "1.5",
            "birthday_gift_points": 300,
            "upgrade_gift_points": 200,
        },
    },
    {
        "code": "diamond",
        "name": "钻石",
        "rank": 3,
        "criteria": {"window_days": _YEAR, "spend_fen": 2_000_000},
        "benefits": {
            "discount_percent": 90,
            "points_multiplier": "2",
            "birthday_gift_points": 800,
            "upgrade_gift_points": 1000,
        },
        "downgrade": {"enabled": True, "every_days": _YEAR, "grace_days": 30},
    },
]


T = TypeVar("T")
KINDS = ("program", "rules", "tiers")


def clear_cache(merchant_id: int | None = None) -> None:
    for kind in KINDS:
        config_cache.forget(merchant_id, kind)


async def _cached(kind: str, merchant_id: int, load: Callable[[], Awaitable[T]]) -> T:
    return await config_cache.cached((kind, merchant_id), load)


def _invalid(exc: RuleError) -> ValidationError:
    return ValidationError(f"{exc.field}: {exc.message}", field=exc.field)


# Programme settings -------------------------------------------------------------------------------


async def program(merchant_id: int) -> Program:
    async def load() -> Program:
        row = await LoyaltyProgram.get_or_none(merchant_id=merchant_id)
        return validate_program(row.settings) if row is not None else Program()

    return await _cached("program", merchant_id, load)


async def save_program(merchant_id: int, raw: object, *, actor: str) -> Program:
    try:
        parsed = validate_program(raw)
    except RuleError as exc:
        raise _invalid(exc) from None
    settings = program_to_dict(parsed)
    async with in_transaction():
        updated = await LoyaltyProgram.filter(merchant_id=merchant_id).update(settings=settings)
        if not updated:
            await LoyaltyProgram.create(merchant_id=merchant_id, settings=settings)
        await audit_log.record(merchant_id, actor, "program.replace", settings=settings)
    clear_cache(merchant_id)
    return parsed


# Earn rule sets -----------------------------------------------------------------------------------


async def current_rules(merchant_id: int) -> RuleSet:
    async def load() -> RuleSet:
        row = await RuleSetVersion.filter(merchant_id=merchant_id).order_by("-version").first()
        if row is None:
            return await _save_rules(merchant_id, DEFAULT_RULES, actor="system", expected=0)
        return validate_rule_set(row.rules)

    return await _cached("rules", merchant_id, load)


async def rules_version(merchant_id: int, version: int) -> RuleSet:
    row = await RuleSetVersion.get_or_none(merchant_id=merchant_id, version=version)
    if row is None:
        raise NotFound(f"规则版本 {version} 不存在", field="version")
    return validate_rule_set(row.rules)


def parse_rules(raw: object, version: int) -> RuleSet:
    """Validate a proposed rule set (its `version`, if sent, is replaced by the one it will get)."""
    if not isinstance(raw, dict):
        raise ValidationError("rules 须为 JSON 对象", field="rules")
    try:
        return validate_rule_set({**raw, "version": version})
    except RuleError as exc:
        raise _invalid(exc) from None


async def save_rules(merchant_id: int, raw: object, *, actor: str) -> RuleSet:
    latest = await RuleSetVersion.filter(merchant_id=merchant_id).order_by("-version").first()
    return await _save_rules(merchant_id, raw, actor=actor, expected=latest.version if latest else 0)


async def _save_rules(merchant_id: int, raw: object, *, actor: str, expected: int) -> RuleSet:
    rules = parse_rules(raw, expected + 1)
    data = rule_set_to_dict(rules)
    try:
        async with in_transaction():
            await RuleSetVersion.create(
                merchant_id=merchant_id, version=rules.version, rules=data, created_by=actor
            )
            if actor != "system":
                await audit_log.record(merchant_id, actor, "rules.replace", f"v{rules.version}", rules=data)
    except IntegrityError:
        if actor == "system":  # two first readers raced to write the defaults: read the winner's
            return await rules_version(merchant_id, rules.version)
        raise Conflict("规则已被他人修改（version 已变），请刷新后重试", field="version") from None
    clear_cache(merchant_id)
    return rules


# Tier ladders -------------------------------------------------------------------------------------


async def current_tiers(merchant_id: int) -> tuple[int, list[Tier]]:
    """The current ladder (shared and cached: callers must not mutate the list)."""

    async def load() -> tuple[int, list[Tier]]:
        row = await TierSetVersion.filter(merchant_id=merchant_id).order_by("-version").first()
        if row is None:
            return await _save_tiers(merchant_id, DEFAULT_TIERS, actor="system", expected=0)
        return row.version, validate_tiers(row.tiers)

    return await _cached("tiers", merchant_id, load)


async def save_tiers(merchant_id: int, raw: object, *, actor: str) -> tuple[int, list[Tier]]:
    latest = await TierSetVersion.filter(merchant_id=merchant_id).order_by("-version").first()
    return await _save_tiers(merchant_id, raw, actor=actor, expected=latest.version if latest else 0)


async def _save_tiers(merchant_id: int, raw: object, *, actor: str, expected: int) -> tuple[int, list[Tier]]:
    try:
        tiers = validate_tiers(raw)
    except RuleError as exc:
        raise _invalid(exc) from None
    data = tiers_to_dicts(tiers)
    version = expected + 1
    try:
        async with in_transaction():
            await TierSetVersion.create(
                merchant_id=merchant_id, version=version, tiers=data, created_by=actor
            )
            if actor != "system":
                await audit_log.record(merchant_id, actor, "tiers.replace", f"v{version}", tiers=data)
    except IntegrityError:
        if actor == "system":
            return await current_tiers(merchant_id)
        raise Conflict("等级设置已被他人修改（version 已变），请刷新后重试", field="version") from None
    clear_cache(merchant_id)
    return version, tiers


def tier_by_code(tiers: list[Tier], code: str) -> Tier:
    """The member's tier; a code the current ladder no longer has falls back to the base tier."""
    return next((tier for tier in tiers if tier.code == code), tiers[0])
