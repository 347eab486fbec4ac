"""Searching the merchant's members: filters, sort orders and keyset pages.

Filters (all optional, combined with AND): the member code; the merchant's own member number from an
import (`external_id`, as written, trimmed); the full phone number (parsed like the
member's own, so `+86 138-0013-8000` finds `13800138000`, matched exactly on the (merchant, phone)
index — phones are stored in clear and only ever shown masked); the name by prefix (`lower(name)`
pattern index) or by fragment (`pg_trgm` index; a fragment of one or two characters, as most Chinese
given names are, has no trigram and scans the merchant's members); the tier (members who never
changed tier hold the ladder's first one); the acquiring store; the registration and last-visit dates
(merchant-local days, both ends included; a member who never visited has no last visit and matches
no last-visit range); blocked or not. Erased (anonymised) members are never listed.

Last visit is `member.last_visit_at`: the latest till purchase (refunded or not) or daily check-in (a
make-up is no visit), kept by triggers of migration 0013 on `purchase` and `checkin` — one indexed
column instead of a max() over two tables per member.

Tag: the members holding the tag (`tag_id`, one of the merchant's, manual or automatic), through the
`member_tag` (tag_id, member_id) unique index.

Sorts: `registered_at`, `last_visit` (never-visited members count as the oldest), `lifetime_spend`
(cash paid over completed purchases, `member.lifetime_spend_fen`, trigger-kept) — each backed by an
index ending in the member id — and `points` (the balance, from the points account: not indexed,
so it sorts the filtered members). Each ascending or descending, the member id breaking ties.

Pages are keyset pages: the cursor is the last row's (sort key, id), opaque to clients (base64url
JSON, bound to its sort). Rows inserted meanwhile land before or after the cursor, never in a page
already read, so no row is repeated or skipped; a row whose sort key changes meanwhile (a member
who visits) may move. No OFFSET: every page costs the same.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from handlers.core import queries
from handlers.core.errors import ValidationError
from handlers.loyalty import config as loyalty_config
from handlers.members.lookup import normalise_code
from handlers.members.profile import parse_phone
from handlers.rules.calendar import day_bounds_utc
from models.merchant import Merchant, Store
from models.tag import Tag

Sort = Literal["registered_at", "last_visit", "points", "lifetime_spend"]
Direction = Literal["asc", "desc"]
SORTS: tuple[Sort, ...] = ("registered_at", "last_visit", "points", "lifetime_spend")
MAX_PAGE = 200  # what the API lets a client ask for
MAX_BATCH = 1000  # what an export fetches at once
MAX_NAME = 32

# The SQL expression each sort orders by, and the type its cursor value is bound as.
_KEYS: dict[str, tuple[str, str]] = {
    "registered_at": ("m.registered_at", "timestamptz"),
    "last_visit": ("COALESCE(m.last_visit_at, '-infinity'::timestamptz)", "timestamptz"),
    "points": ("COALESCE(a.balance, 0)", "integer"),
    "lifetime_spend": ("m.lifetime_spend_fen", "bigint"),
}
_LAST_VISIT = _KEYS["last_visit"][0]

_SELECT = """
SELECT m.id, m.code, m.external_id, m.name, m.phone, m.gender, m.birthday, m.registered_at, m.last_visit_at,
       m.lifetime_spend_fen, m.source, m.subscribed, m.blocked_at, m.store_id,
       s.code AS store_code, s.name AS store_name,
       COALESCE(t.tier_code, :base_tier) AS tier_code, COALESCE(a.balance, 0) AS points
  FROM member m
  LEFT JOIN member_tier t ON t.member_id = m.id
  LEFT JOIN points_account a ON a.member_id = m.id
  LEFT JOIN store s ON s.id = m.store_id
 WHERE m.merchant_id = :merchant AND m.anonymized_at IS NULL"""


@dataclass(frozen=True, slots=True)
class Filters:
    """Raw filter values as the merchant gave them; None: not filtered."""

    code: str | None = None
    external_id: str | None = None
    phone: str | None = None
    name: str | None = None  # prefix
    name_contains: str | None = None
    tier: str | None = None
    store_id: int | None = None
    registered_from: date | None = None
    registered_to: date | None = None
    visited_from: date | None = None
    visited_to: date | None = None
    blocked: bool | None = None
    tag_id: int | None = None


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    code: str
    external_id: str | None
    name: str | None
    phone: str | None  # in clear: the caller masks it
    gender: str | None
    birthday: date | None
    tier_code: str
    tier_name: str
    points: int
    lifetime_spend_fen: int
    registered_at: datetime
    last_visit_at: datetime | None
    source: str
    subscribed: bool
    blocked: bool
    store_id: int | None
    store_code: str | None
    store_name: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated search: its SQL (without the keyset clause) and parameters, ready to page through."""

    merchant_id: int
    sort: Sort
    direction: Direction
    where: str
    params: dict[str, Any]
    tier_names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Row]
    next_cursor: str | None  # None: this was the last page


def _like(text: str) -> str:
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _name(raw: str, field_name: str) -> str:
    text = raw.strip()
    if not 1 <= len(text) <= MAX_NAME:
        raise ValidationError(f"姓名 {field_name} 须为 1–{MAX_NAME} 个字符", field=field_name)
    return text


def _range(first: date | None, last: date | None, tz: str, names: tuple[str, str]) -> tuple[Any, Any]:
    """[from, until) instants of the merchant-local days `first`..`last` (either may be open)."""
    if first is not None and last is not None and first > last:
        raise ValidationError(f"{names[0]} 不能晚于 {names[1]}", field=names[0])
    start = day_bounds_utc(first, tz)[0] if first is not None else None
    until = day_bounds_utc(last, tz)[1] if last is not None else None
    return start, until


async def _clauses(
    merchant: Merchant, filters: Filters, base_tier: str, tier_codes: set[str]
) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {}
    if filters.code is not None:
        where.append("m.code = :code")
        params["code"] = normalise_code(filters.code)[:16]
    if filters.external_id is not None:
        where.append("m.external_id = :external_id")
        params["external_id"] = filters.external_id.strip()
    if filters.phone is not None:
        where.append("m.phone = :phone")
        params["phone"] = parse_phone(filters.phone)
    if filters.name is not None:
        where.append("lower(m.name) LIKE :name_prefix ESCAPE '\\'")
        params["name_prefix"] = _like(_name(filters.name, "name")) + "%"
    if filters.name_contains is not None:
        where.append("lower(m.name) LIKE :name_contains ESCAPE '\\'")
        params["name_contains"] = "%" + _like(_name(filters.name_contains, "name_contains")) + "%"
    if filters.tier is not None:
        if filters.tier not in tier_codes:
            known = "、".join(sorted(tier_codes))
            raise ValidationError(f"等级 tier 不存在，可选：{known}", field="tier")
        base = " OR t.tier_code IS NULL" if filters.tier == base_tier else ""
        where.append(f"(t.tier_code = :tier{base})")
        params["tier"] = filters.tier
    if filters.store_id is not None:
        if not await Store.exists(id=filters.store_id, merchant_id=merchant.id):
            raise ValidationError("门店 store_id 不存在", field="store_id")
        where.append("m.store_id = :store_id")
        params["store_id"] = filters.store_id
    tz = merchant.timezone
    start, until = _range(
        filters.registered_from, filters.registered_to, tz, ("registered_from", "registered_to")
    )
    if start is not None:
        where.append("m.registered_at >= :registered_from")
        params["registered_from"] = start
    if until is not None:
        where.append("m.registered_at < :registered_until")
        params["registered_until"] = until
    start, until = _range(filters.visited_from, filters.visited_to, tz, ("visited_from", "visited_to"))
    if start is not None:
        where.append(f"{_LAST_VISIT} >= :visited_from")
        params["visited_from"] = start
    if until is not None:
        where.append(f"{_LAST_VISIT} < :visited_until AND m.last_visit_at IS NOT NULL")
        params["visited_until"] = until
    if filters.blocked is not None:
        where.append("m.blocked_at IS NOT NULL" if filters.blocked else "m.blocked_at IS NULL")
    if filters.tag_id is not None:
        if not await Tag.exists(id=filters.tag_id, merchant_id=merchant.id):
            raise ValidationError("标签 tag_id 不存在", field="tag_id")
        where.append("m.id IN (SELECT mt.member_id FROM member_tag mt WHERE mt.tag_id = :tag_id)")
        params["tag_id"] = filters.tag_id
    return where, params


async def plan(
    merchant: Merchant, filters: Filters, *, sort: Sort = "registered_at", direction: Direction = "desc"
) -> Plan:
    """Validate the filters (a 400 names the bad one) and build the search."""
    if sort not in _KEYS or direction not in ("asc", "desc"):
        raise ValidationError("排序方式 sort 无效", field="sort")
    _, ladder = await loyalty_config.current_tiers(merchant.id)
    names = {tier.code: tier.name for tier in ladder}
    where, params = await _clauses(merchant, filters, ladder[0].code, set(names))
    params.update(merchant=merchant.id, base_tier=ladder[0].code)
    clause = "".join(f"\n   AND {condition}" for condition in where)
    return Plan(merchant.id, sort, direction, clause, params, names)


def _key(row: Row, sort: Sort) -> Any:
    match sort:
        case "registered_at":
            return row.registered_at.isoformat()
        case "last_visit":
            return row.last_visit_at.isoformat() if row.last_visit_at else None
        case "points":
            return row.points
        case "lifetime_spend":
            return row.lifetime_spend_fen


def encode_cursor(found: Plan, row: Row) -> str:
    raw = json.dumps([found.sort, found.direction, _key(row, found.sort), row.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _bad_cursor() -> ValidationError:
    return ValidationError("cursor 无效或与当前排序不符，请从第一页重新查询", field="cursor")


def decode_cursor(found: Plan, cursor: str) -> tuple[Any, int]:
    """The (sort key, id) a cursor of this plan's sort resumes after; anything else is a 400."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        sort, direction, key, member_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise _bad_cursor() from None
    if (sort, direction) != (found.sort, found.direction) or type(member_id) is not int:
        raise _bad_cursor()
    if not 1 <= member_id <= 2**31 - 1:
        raise _bad_cursor()
    return _cursor_key(found.sort, key), member_id


def _cursor_key(sort: Sort, key: Any) -> Any:
    if sort in ("points", "lifetime_spend"):
        if type(key) is not int or abs(key) >= 2**63:
            raise _bad_cursor()
        return key
    if key is None and sort == "last_visit":
        return None
    try:
        moment = datetime.fromisoformat(key)
    except (TypeError, ValueError):
        raise _bad_cursor() from None
    if moment.tzinfo is None:
        raise _bad_cursor()
    return moment


def _sql(found: Plan, after: bool) -> str:
    expression, kind = _KEYS[found.sort]
    order = found.direction.upper()
    keyset = ""
    if after:
        bound = f"CAST(:after_key AS {kind})"
        if found.sort == "last_visit":
            bound = f"COALESCE({bound}, '-infinity'::timestamptz)"
        keyset = f"\n   AND ({expression}, m.id) {'<' if order == 'DESC' else '>'} ({bound}, :after_id)"
    return f"{_SELECT}{found.where}{keyset}\n ORDER BY {expression} {order}, m.id {order}\n LIMIT :limit"


def _row(found: Plan, raw: dict[str, Any]) -> Row:
    tier = raw["tier_code"]
    return Row(
        id=raw["id"],
        code=raw["code"],
        external_id=raw["external_id"],
        name=raw["name"],
        phone=raw["phone"],
        gender=raw["gender"],
        birthday=raw["birthday"],
        tier_code=tier,
        tier_name=found.tier_names.get(tier, tier),
        points=int(raw["points"]),
        lifetime_spend_fen=int(raw["lifetime_spend_fen"]),
        registered_at=raw["registered_at"],
        last_visit_at=raw["last_visit_at"],
        source=raw["source"],
        subscribed=raw["subscribed"],
        blocked=raw["blocked_at"] is not None,
        store_id=raw["store_id"],
        store_code=raw["store_code"],
        store_name=raw["store_name"],
    )


async def page(found: Plan, *, cursor: str | None = None, limit: int = 50, replica: bool = False) -> Page:
    """`limit` members after `cursor` (from the previous page's `next_cursor`; None: the first page);
    `replica`: read from the read connection (DATABASE_READ_URL), as exports do."""
    if not 1 <= limit <= MAX_BATCH:
        raise ValidationError(f"limit 须在 1–{MAX_BATCH} 之间", field="limit")
    params = dict(found.params, limit=limit + 1)
    if cursor is not None:
        params["after_key"], params["after_id"] = decode_cursor(found, cursor)
    fetch = queries.fetch_read if replica else queries.fetch_rows
    raw = await fetch(_sql(found, cursor is not None), **params)
    rows = [_row(found, r) for r in raw[:limit]]
    more = len(raw) > limit
    return Page(rows, encode_cursor(found, rows[-1]) if more else None)


async def batches(found: Plan, *, size: int) -> AsyncIterator[list[Row]]:
    """Every member the plan finds, `size` at a time, each batch one keyset query on the read connection
    (an export never holds more than one batch)."""
    cursor: str | None = None
    while True:
        batch = await page(found, cursor=cursor, limit=size, replica=True)
        if batch.rows:
            yield batch.rows
        if batch.next_cursor is None:
            return
        cursor = batch.next_cursor
