"""Admin JSON API of the loyalty core: versioned earn rules and tiers, programme settings, the audit
log, the what-if simulator, manual points grants and the referral ranking.

Rule sets, tier ladders and programme settings are free-form JSON documents validated by the pure
validators in `handlers.rules`; a 400 names the failing field as a path inside the request body
(`rules.bands[0].min_fen`, `tiers[1].code`, `program.referral.trigger`). Before that, the documents
are checked for size, nesting depth and control characters (which PostgreSQL cannot store).
Configuration needs an admin; reading the audit log, simulating, granting and the ranking a manager.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from pydantic import Field, StrictInt

from handlers.core.errors import ValidationError
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import grants, ledger, referrals, simulate
from handlers.rules.earn_config import rule_set_to_dict
from handlers.rules.program import program_to_dict
from handlers.rules.tiers_config import tiers_to_dicts
from models.loyalty import AuditLog
from models.points import PointsKind
from webhooks.api import Call, In, Line, Out, Routes
from webhooks.auth import ADMIN, MANAGER

routes = Routes("admin_loyalty")

MAX_NODES = 5000
MAX_DEPTH = 8
T = TypeVar("T")
Document = Annotated[dict[str, Any], Field(max_length=64, description="a JSON object (see the docs)")]


# Documents ----------------------------------------------------------------------------------------


def _at(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"


def _controls(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def check_document(value: Any, path: str) -> None:
    """Refuse documents too large or deep to be configuration, and strings with control characters."""
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        node, where, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            raise ValidationError(f"{path}: 配置过大或嵌套过深", field=path)
        if isinstance(node, str) and _controls(node):
            raise ValidationError(f"{where}: 不能包含控制字符", field=where)
        if isinstance(node, dict):
            for key, child in node.items():
                if _controls(key):
                    raise ValidationError(f"{where}: 字段名不能包含控制字符", field=where)
                stack.append((child, _at(where, key), depth + 1))
        elif isinstance(node, list):
            stack.extend((child, _at(where, i), depth + 1) for i, child in enumerate(node))


async def within(prefix: str, call: Awaitable[T]) -> T:
    """Await a use case, naming validation failures by their path inside the request body."""
    try:
        return await call
    except ValidationError as exc:
        inner = exc.field or ""
        field = prefix if inner in ("", "$", prefix) else f"{prefix}.{inner}"
        raise ValidationError(f"{prefix}.{exc.message}" if inner else exc.message, field=field) from None


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


# Earn rules ---------------------------------------------------------------------------------------


class RulesIn(In):
    rules: Document


class RulesOut(Out):
    version: int
    rules: dict[str, Any]


class VersionPath(In):
    version: Annotated[int, Field(ge=1, le=2_000_000_000)]


@routes.get("/api/admin/rules", response=RulesOut, auth=ADMIN)
async def get_rules(call: Call[None, None]) -> RulesOut:
    """The current earn rule set and its version."""
    rules = await loyalty_config.current_rules(call.merchant.id)
    return RulesOut(version=rules.version, rules=rule_set_to_dict(rules))


@routes.put("/api/admin/rules", body=RulesIn, response=RulesOut, auth=ADMIN, errors=(409,))
async def put_rules(call: Call[RulesIn, None]) -> RulesOut:
    """Replace the earn rules: validated, saved as the next version, audit-logged."""
    check_document(call.body.rules, "rules")
    await loyalty_config.current_rules(call.merchant.id)  # a first save keeps the defaults as v1
    rules = await within(
        "rules", loyalty_config.save_rules(call.merchant.id, call.body.rules, actor=_actor(call))
    )
    return RulesOut(version=rules.version, rules=rule_set_to_dict(rules))


@routes.get("/api/admin/rules/versions/{version}", path_model=VersionPath, response=RulesOut, auth=ADMIN)
async def get_rules_version(call: Call[None, VersionPath]) -> RulesOut:
    """One earlier (or the current) rule set version."""
    rules = await loyalty_config.rules_version(call.merchant.id, call.path.version)
    return RulesOut(version=rules.version, rules=rule_set_to_dict(rules))


# Tiers and programme ------------------------------------------------------------------------------


class TiersIn(In):
    tiers: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=32)]


class TiersOut(Out):
    version: int
    tiers: list[dict[str, Any]]


class ProgramIn(In):
    program: Document


class ProgramOut(Out):
    program: dict[str, Any]


@routes.get("/api/admin/tiers", response=TiersOut, auth=ADMIN)
async def get_tiers(call: Call[None, None]) -> TiersOut:
    """The current tier ladder and its version."""
    version, tiers = await loyalty_config.current_tiers(call.merchant.id)
    return TiersOut(version=version, tiers=tiers_to_dicts(tiers))


@routes.put("/api/admin/tiers", body=TiersIn, response=TiersOut, auth=ADMIN, errors=(409,))
async def put_tiers(call: Call[TiersIn, None]) -> TiersOut:
    """Replace the tier ladder: validated, saved as the next version, audit-logged."""
    check_document(call.body.tiers, "tiers")
    await loyalty_config.current_tiers(call.merchant.id)
    version, tiers = await loyalty_config.save_tiers(call.merchant.id, call.body.tiers, actor=_actor(call))
    return TiersOut(version=version, tiers=tiers_to_dicts(tiers))


@routes.get("/api/admin/program", response=ProgramOut, auth=ADMIN)
async def get_program(call: Call[None, None]) -> ProgramOut:
    """The programme settings (expiry, bonuses, referral levels, offsets, check-in)."""
    return ProgramOut(program=program_to_dict(await loyalty_config.program(call.merchant.id)))


@routes.put("/api/admin/program", body=ProgramIn, response=ProgramOut, auth=ADMIN)
async def put_program(call: Call[ProgramIn, None]) -> ProgramOut:
    """Replace the programme settings (omitted keys take their documented defaults); audit-logged."""
    check_document(call.body.program, "program")
    program = await within(
        "program", loyalty_config.save_program(call.merchant.id, call.body.program, actor=_actor(call))
    )
    return ProgramOut(program=program_to_dict(program))


# Audit log ----------------------------------------------------------------------------------------


class AuditQuery(In):
    cursor: Annotated[int | None, Field(ge=1, le=2**62)] = None
    limit: Annotated[int, Field(ge=1, le=100)] = 50


class AuditEntryOut(Out):
    id: int
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    created_at: datetime


class AuditLogOut(Out):
    entries: list[AuditEntryOut]
    next_cursor: int | None = Field(description="pass as ?cursor= for older entries; null at the end")


@routes.get("/api/admin/audit-log", response=AuditLogOut, auth=MANAGER, errors=(400,))
async def audit_log(call: Call[None, None]) -> AuditLogOut:
    """Newest first; query `cursor` (from `next_cursor`) and `limit` (1–100, default 50)."""
    query = AuditQuery.model_validate(dict(call.request.query))
    rows = AuditLog.filter(merchant_id=call.merchant.id)
    if query.cursor is not None:
        rows = rows.filter(id__lt=query.cursor)
    page = await rows.order_by("-id").limit(query.limit + 1)
    entries = [
        AuditEntryOut(
            id=row.id,
            actor=row.actor,
            action=row.action,
            subject=row.subject,
            detail=row.detail if isinstance(row.detail, dict) else {"value": row.detail},
            created_at=row.created_at,
        )
        for row in page[: query.limit]
    ]
    return AuditLogOut(entries=entries, next_cursor=entries[-1].id if len(page) > query.limit else None)


# What-if simulator --------------------------------------------------------------------------------


class SimulateIn(In):
    rules: Document
    days: Annotated[StrictInt, Field(ge=1, le=simulate.MAX_DAYS)] = 30


class OutcomeOut(Out):
    rule_set_version: int
    points: int
    cost_fen: int


class SimulationOut(Out):
    since: datetime
    until: datetime
    purchases: int = Field(description="completed, not refunded purchases replayed")
    recorded_points: int = Field(description="what those purchases actually earned")
    current: OutcomeOut
    proposed: OutcomeOut
    difference_points: int = Field(description="proposed minus current")
    difference_fen: int = Field(description="proposed minus current cash cost")


@routes.post("/api/admin/rules/simulate", body=SimulateIn, response=SimulationOut, auth=MANAGER)
async def simulate_rules(call: Call[SimulateIn, None]) -> SimulationOut:
    """What a proposed rule set would have granted over the last `days` days, beside the current one."""
    check_document(call.body.rules, "rules")
    result = await within(
        "rules",
        simulate.simulate(call.merchant.id, call.body.rules, days=call.body.days, now=datetime.now(UTC)),
    )
    return SimulationOut(
        since=result.since,
        until=result.until,
        purchases=result.purchases,
        recorded_points=result.recorded_points,
        current=_outcome(result.current),
        proposed=_outcome(result.proposed),
        difference_points=result.difference_points,
        difference_fen=result.difference_fen,
    )


def _outcome(outcome: simulate.Outcome) -> OutcomeOut:
    return OutcomeOut(
        rule_set_version=outcome.rule_set_version, points=outcome.points, cost_fen=outcome.cost_fen
    )


# Manual grants ------------------------------------------------------------------------------------


class MemberPath(In):
    member_code: Annotated[str, Field(pattern=r"^[0-9A-Za-z-]{4,20}$")]


class GrantIn(In):
    delta: Annotated[
        StrictInt,
        Field(
            ge=-ledger.MAX_POSTING,
            le=ledger.MAX_POSTING,
            description="points to add (> 0) or deduct (< 0); never 0",
        ),
    ]
    reason: Annotated[Line, Field(min_length=1, max_length=grants.MAX_REASON)]
    idempotency_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]


class GrantOut(Out):
    member_code: str
    transaction_id: int
    delta: int
    kind: PointsKind
    balance_after: int
    replayed: bool = Field(description="true when the key was used before: nothing new was posted")


@routes.post(
    "/api/admin/members/{member_code}/points",
    path_model=MemberPath,
    body=GrantIn,
    response=GrantOut,
    auth=MANAGER,
    errors=(409,),
)
async def grant_points(call: Call[GrantIn, MemberPath]) -> GrantOut:
    """Grant or deduct points by hand, with a reason; a deduction never takes the balance below zero."""
    body = call.body
    result = await grants.adjust(
        call.merchant,
        call.path.member_code,
        body.delta,
        reason=body.reason,
        idempotency_key=body.idempotency_key,
        staff=call.staff,
        now=datetime.now(UTC),
        effects=call.effects,
    )
    posted = result.posted
    return GrantOut(
        member_code=result.member.code,
        transaction_id=posted.transaction_id,
        delta=posted.delta,
        kind=posted.kind,
        balance_after=posted.balance_after,
        replayed=posted.replayed,
    )


# Referral ranking ---------------------------------------------------------------------------------


class RankingQuery(In):
    days: Annotated[int, Field(ge=1, le=366)] = 30
    limit: Annotated[int, Field(ge=1, le=referrals.MAX_RANKING)] = 20


class RankingEntryOut(Out):
    rank: int
    member_code: str
    name: str | None
    referrals: int = Field(description="level-1 referrals awarded in the window")
    points: int = Field(description="points earned from referral awards of every level")


class RankingOut(Out):
    since: datetime
    until: datetime
    entries: list[RankingEntryOut]


@routes.get("/api/admin/referrals/ranking", response=RankingOut, auth=MANAGER, errors=(400,))
async def referral_ranking(call: Call[None, None]) -> RankingOut:
    """Top referrers of the last `days` days (query `days` 1–366, default 30; `limit` 1–100, default 20)."""
    query = RankingQuery.model_validate(dict(call.request.query))
    until = datetime.now(UTC)
    since = until - timedelta(days=query.days)
    ranked = await referrals.ranking(call.merchant.id, since=since, until=until, limit=query.limit)
    return RankingOut(
        since=since,
        until=until,
        entries=[
            RankingEntryOut(
                rank=i, member_code=e.member_code, name=e.name, referrals=e.referrals, points=e.points
            )
            for i, e in enumerate(ranked, 1)
        ],
    )
