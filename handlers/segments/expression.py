"""A segment's expression: its grammar, its validation, and its compilation to one SQL WHERE clause.

    {"and": [e, …]}  {"or": [e, …]}  {"not": e}          nesting up to MAX_DEPTH, MAX_NODES nodes
    {"tag": 12}                                           holds tag 12
    {"attr": "gender", "op": "in", "value": ["female"]}   a member attribute test (`ATTRIBUTES`)

Attribute tests: `eq` / `in` on gender, tier, source, store_id, acquired_by (staff id), birthday_month;
`gte` / `lte` / `between` ([low, high], both included) on age (whole years, merchant-local today),
registered_days and last_visit_days (days since; a member who never visited matches no last-visit
test), lifetime_spend_fen and points; `eq` true/false on subscribed, has_phone and blocked.

`parse` checks the shape (a 400 naming the path, e.g. `expression.and[1].value`); `compile` checks the
values against the merchant (its tags, tiers, stores, staff) and returns the WHERE clause and its
parameters: every value is bound (`:s0`, `:s1`, …), never interpolated.

The clause reads `f`, the member's row of `member_facts` (migration 0025: one narrow row per live member
with the attributes above, its tier code and the sorted ids of its tags, kept by triggers in the writing
transaction), and, for `points` only, `a` (points_account); `Compiled.from_clause` joins it. A count is
then one scan of the facts, with no join: a tag test is `f.tags @> {id}`, the tags an AND (OR) tests
directly are tested together (`f.tags @> {ids}`, `f.tags && {ids}`). Erased members have no facts row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from handlers.core import queries
from handlers.core.errors import ValidationError
from handlers.rules.tag_rules import birthday_bounds
from models.member import Gender, MemberSource

MAX_DEPTH = 6
MAX_NODES = 64
MAX_VALUES = 200
ROOT = "expression"

CHOICE = ("eq", "in")
RANGE = ("gte", "lte", "between")
FLAG = ("eq",)
# attribute -> (its ops, value kind)
ATTRIBUTES: dict[str, tuple[tuple[str, ...], str]] = {
    "gender": (CHOICE, "text"),
    "tier": (CHOICE, "text"),
    "source": (CHOICE, "text"),
    "store_id": (CHOICE, "id"),
    "acquired_by": (CHOICE, "id"),
    "birthday_month": (CHOICE, "month"),
    "age": (RANGE, "count"),
    "registered_days": (RANGE, "count"),
    "last_visit_days": (RANGE, "count"),
    "lifetime_spend_fen": (RANGE, "amount"),
    "points": (RANGE, "amount"),
    "subscribed": (FLAG, "flag"),
    "has_phone": (FLAG, "flag"),
    "blocked": (FLAG, "flag"),
}
_LIMITS = {"id": (1, 2**31 - 1), "month": (1, 12), "count": (0, 36_500), "amount": (0, 2**62)}

# `tags` is NULL for a member without tags: false, never NULL (so NOT of a tag test holds for them)
_ALL_TAGS_TEST = "COALESCE(f.tags @> CAST({tags} AS integer[]), false)"
_ANY_TAG_TEST = "COALESCE(f.tags && CAST({tags} AS integer[]), false)"
BASE_WHERE = "f.merchant_id = :merchant"
MEMBER_ID = "f.member_id"  # the selected member's id, for keyset pages and joins


def _bad(path: str, message: str) -> ValidationError:
    return ValidationError(f"人群条件 {path} {message}", field=path)


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"


def _integer(raw: object, path: str, kind: str) -> int:
    low, high = _LIMITS[kind]
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _bad(path, "应为整数")
    if not low <= raw <= high:
        raise _bad(path, f"应在 {low}–{high} 之间")
    return raw


def _scalar(raw: object, path: str, kind: str) -> object:
    if kind == "text":
        if not isinstance(raw, str) or not 1 <= len(raw) <= 32 or "\x00" in raw:
            raise _bad(path, "应为 1–32 个字符的文本")
        return raw
    return _integer(raw, path, kind)


def _attribute(raw: dict[str, Any], path: str) -> dict[str, Any]:
    if set(raw) - {"attr", "op", "value"} or not {"attr", "op", "value"} <= set(raw):
        raise _bad(path, "属性条件须恰有 attr、op、value 三个字段")
    name = raw["attr"]
    if name not in ATTRIBUTES:
        raise _bad(_join(path, "attr"), f"可选值为：{'、'.join(ATTRIBUTES)}")
    ops, kind = ATTRIBUTES[name]
    op = raw["op"]
    if op not in ops:
        raise _bad(_join(path, "op"), f"对 {name} 可选：{'、'.join(ops)}")
    where = _join(path, "value")
    value: object = raw["value"]
    if kind == "flag":
        if not isinstance(value, bool):
            raise _bad(where, "应为 true 或 false")
    elif op == "in":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_VALUES:
            raise _bad(where, f"应为 1–{MAX_VALUES} 项的数组")
        value = sorted({_scalar(v, _join(where, i), kind) for i, v in enumerate(value)}, key=str)
    elif op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise _bad(where, "应为 [下限, 上限]")
        low, high = (_integer(v, _join(where, i), kind) for i, v in enumerate(value))
        if low > high:
            raise _bad(where, "下限不能大于上限")
        value = [low, high]
    else:
        value = _scalar(value, where, kind)
    return {"attr": name, "op": op, "value": value}


def parse(raw: object, path: str = ROOT) -> dict[str, Any]:
    """The expression normalised (attribute lists sorted, duplicates dropped), or a 400 naming the path."""
    counter = [0]
    return _node(raw, path, 1, counter)


def _node(raw: object, path: str, depth: int, counter: list[int]) -> dict[str, Any]:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise _bad(path, f"条件过多（最多 {MAX_NODES} 个）")
    if depth > MAX_DEPTH:
        raise _bad(path, f"嵌套过深（最多 {MAX_DEPTH} 层）")
    if not isinstance(raw, dict) or not raw:
        raise _bad(path, "应为对象：and、or、not、tag 或 attr 条件")
    if "attr" in raw:
        return _attribute(raw, path)
    if len(raw) != 1:
        raise _bad(path, "and、or、not、tag 条件只能有一个字段")
    ((key, value),) = raw.items()
    where = _join(path, key)
    match key:
        case "and" | "or":
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_NODES:
                raise _bad(where, "应为非空数组")
            return {key: [_node(v, _join(where, i), depth + 1, counter) for i, v in enumerate(value)]}
        case "not":
            return {"not": _node(value, where, depth + 1, counter)}
        case "tag":
            return {"tag": _integer(value, where, "id")}
    raise _bad(where, "未知条件：可用 and、or、not、tag、attr")


@dataclass(slots=True)
class Compiled:
    where: str
    params: dict[str, Any] = field(default_factory=dict)
    tiers: bool = False  # tests the tier
    points: bool = False  # reads `a` (points_account)

    def from_clause(self) -> str:
        """`member_facts f`, with the points account when the clause tests points."""
        joins = ["member_facts f"]
        if self.points:
            joins.append(f"LEFT JOIN points_account a ON a.member_id = {MEMBER_ID}")
        return "\n  ".join(joins)


@dataclass(slots=True)
class _Context:
    now: datetime
    today: date
    base_tier: str
    tiers: set[str]
    out: Compiled
    tags: set[int] = field(default_factory=set)
    stores: set[int] = field(default_factory=set)
    staff: set[int] = field(default_factory=set)

    def bind(self, value: object) -> str:
        name = f"s{len(self.out.params)}"
        self.out.params[name] = value
        return f":{name}"


def _walk(node: dict[str, Any], ctx: _Context, path: str) -> str:
    if "and" in node or "or" in node:
        key = "and" if "and" in node else "or"
        children = list(enumerate(node[key]))
        parts = []
        # the tags tested directly: one array test of them all (AND: holds all; OR: holds any)
        tags = sorted({child["tag"] for _, child in children if "tag" in child})
        if tags:
            ctx.tags.update(tags)
            test = _ALL_TAGS_TEST if key == "and" else _ANY_TAG_TEST
            parts.append(test.format(tags=ctx.bind(tags)))
            children = [(i, child) for i, child in children if "tag" not in child]
        parts += [_walk(child, ctx, _join(_join(path, key), i)) for i, child in children]
        return "(" + f" {key.upper()} ".join(parts) + ")"
    if "not" in node:
        return f"(NOT {_walk(node['not'], ctx, _join(path, 'not'))})"
    if "tag" in node:
        ctx.tags.add(node["tag"])
        return _ALL_TAGS_TEST.format(tags=ctx.bind([node["tag"]]))
    return _test(node, ctx, path)


def _choice(column: str, op: str, value: Any, ctx: _Context) -> str:
    """True or false, never NULL: a member without the attribute (no gender, no birthday, no store)
    does not match, so NOT of the test does (SQL's NULL would drop it from both)."""
    if op == "eq":
        return f"COALESCE({column} = {ctx.bind(value)}, false)"
    return f"COALESCE({column} = ANY({ctx.bind(list(value))}), false)"


def _range(column: str, op: str, value: Any, ctx: _Context) -> str:
    low, high = _bounds(op, value)
    parts = []
    if low is not None:
        parts.append(f"{column} >= {ctx.bind(low)}")
    if high is not None:
        parts.append(f"{column} <= {ctx.bind(high)}")
    return "(" + " AND ".join(parts) + ")"


def _bounds(op: str, value: Any) -> tuple[int | None, int | None]:
    if op == "gte":
        return value, None
    if op == "lte":
        return None, value
    return value[0], value[1]


def _days_since(column: str, op: str, value: Any, ctx: _Context) -> str:
    """`column` at least `low` and at most `high` days before now."""
    low, high = _bounds(op, value)
    parts = [f"{column} IS NOT NULL"]
    if low is not None:
        parts.append(f"{column} <= {ctx.bind(ctx.now - timedelta(days=low))}")
    if high is not None:
        parts.append(f"{column} >= {ctx.bind(ctx.now - timedelta(days=high))}")
    return "(" + " AND ".join(parts) + ")"


def _check_values(name: str, values: list[Any], known: set[Any] | None, path: str) -> None:
    if known is None:
        return
    unknown = [v for v in values if v not in known]
    if unknown:
        raise _bad(_join(path, "value"), f"不存在：{unknown[0]}")


def _test(node: dict[str, Any], ctx: _Context, path: str) -> str:
    name, op, value = node["attr"], node["op"], node["value"]
    values = value if isinstance(value, list) else [value]
    match name:
        case "gender":
            _check_values(name, values, {g.value for g in Gender}, path)
            return _choice("f.gender", op, value, ctx)
        case "source":
            _check_values(name, values, {s.value for s in MemberSource}, path)
            return _choice("f.source", op, value, ctx)
        case "tier":
            _check_values(name, values, ctx.tiers, path)
            ctx.out.tiers = True
            return _choice(f"COALESCE(f.tier_code, {ctx.bind(ctx.base_tier)})", op, value, ctx)
        case "store_id":
            ctx.stores.update(values)
            return _choice("f.store_id", op, value, ctx)
        case "acquired_by":
            ctx.staff.update(values)
            return _choice("f.acquired_by_id", op, value, ctx)
        case "birthday_month":
            return _choice("EXTRACT(MONTH FROM f.birthday)::integer", op, value, ctx)
        case "age":
            earliest, latest = birthday_bounds(ctx.today, *_bounds(op, value))
            parts = ["f.birthday IS NOT NULL"]
            if earliest is not None:
                parts.append(f"f.birthday >= {ctx.bind(earliest)}")
            if latest is not None:
                parts.append(f"f.birthday <= {ctx.bind(latest)}")
            return "(" + " AND ".join(parts) + ")"
        case "registered_days":
            return _days_since("f.registered_at", op, value, ctx)
        case "last_visit_days":
            return _days_since("f.last_visit_at", op, value, ctx)
        case "lifetime_spend_fen":
            return _range("f.lifetime_spend_fen", op, value, ctx)
        case "points":
            ctx.out.points = True
            return _range("COALESCE(a.balance, 0)", op, value, ctx)
        case "subscribed":
            return "f.subscribed" if value else "NOT f.subscribed"
        case "has_phone":
            return "f.has_phone" if value else "NOT f.has_phone"
        case "blocked":
            return "f.blocked" if value else "NOT f.blocked"
    raise _bad(path, "未知属性")  # unreachable: `parse` checked the name


async def _refuse_unknown(merchant_id: int, table: str, ids: set[int], label: str) -> None:
    if not ids:
        return
    rows = await queries.fetch_rows(
        f"SELECT id FROM {table} WHERE merchant_id = :merchant AND id = ANY(CAST(:ids AS integer[]))",  # noqa: S608 - fixed table names
        merchant=merchant_id,
        ids=sorted(ids),
    )
    missing = sorted(ids - {int(row["id"]) for row in rows})
    if missing:
        raise _bad(ROOT, f"引用的{label}不存在：{missing[0]}")


async def compile_expression(
    merchant_id: int, raw: object, *, now: datetime, today: date, base_tier: str, tiers: set[str]
) -> Compiled:
    """The expression's WHERE clause (with `BASE_WHERE`) and parameters, every reference checked."""
    node = parse(raw)
    ctx = _Context(now=now, today=today, base_tier=base_tier, tiers=tiers, out=Compiled(""))
    ctx.out.params["merchant"] = merchant_id
    clause = _walk(node, ctx, ROOT)
    await _refuse_unknown(merchant_id, "tag", ctx.tags, "标签")
    await _refuse_unknown(merchant_id, "store", ctx.stores, "门店")
    await _refuse_unknown(merchant_id, "staff", ctx.staff, "员工")
    ctx.out.where = f"{BASE_WHERE} AND {clause}"
    return ctx.out
