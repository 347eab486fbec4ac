"""Applying a manual tag to members and removing it: one member, or a bulk file.

Only manual tags are applied by hand (an automatic tag belongs to its rule). Each change writes a history
row naming the staff member, and an audit-log entry; applying a tag a member holds (or removing one they
do not) changes nothing and is not an error.

A bulk file (CSV or XLSX, `handlers.core.sheets`) lists members by code (会员码) or phone (手机号), one
column. It is all or nothing: every row is checked first, and any rejected row — unknown member, erased
member, the same member twice, a malformed or shared phone — means nothing is changed and the report
lists every rejected row; otherwise every member is tagged (or untagged) in one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from tortoise.transactions import in_transaction

from handlers.core import audit_log, queries, sheets
from handlers.core.errors import Conflict, DomainError, ErrorCode, NotFound, ValidationError
from handlers.members.lookup import normalise_code
from handlers.members.profile import parse_phone
from handlers.tags import recompute
from handlers.tags.catalogue import get_tag
from models.tag import Tag, TagKind

Action = Literal["add", "remove"]
MAX_ROWS = 100_000
MAX_REJECTIONS = 1000  # listed in the report (all are counted)
CODE_HEADERS = ("会员码", "会员编号", "会员卡号", "code", "member_code")
PHONE_HEADERS = ("手机号", "手机", "手机号码", "phone", "mobile")
REASONS = {
    "unknown": "会员不存在",
    "erased": "会员已注销（资料已删除）",
    "duplicate": "与第 {first} 行是同一会员",
    "invalid": "{what}格式不正确",
    "shared": "多个会员使用此手机号，请改用会员码",
    "empty": "此行为空",
}


@dataclass(frozen=True, slots=True)
class Rejection:
    row: int
    value: str
    reason: str  # unknown, erased, duplicate, invalid, shared, empty
    message: str


@dataclass(frozen=True, slots=True)
class BulkReport:
    action: Action
    column: str  # code or phone
    rows: int
    applied: bool
    changed: int  # members tagged (add) or untagged (remove)
    unchanged: int  # already so
    rejected: int
    rejections: list[Rejection] = field(default_factory=list)


def _manual(tag: Tag) -> None:
    if tag.kind != TagKind.MANUAL:
        raise Conflict("自动标签由规则维护，不能手动添加或移除", field="tag_id")


async def _live_member(merchant_id: int, member_id: int) -> None:
    rows = await queries.fetch_rows(
        "SELECT anonymized_at FROM member WHERE id = :member AND merchant_id = :merchant",
        member=member_id,
        merchant=merchant_id,
    )
    if not rows:
        raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND, field="member_id")
    if rows[0]["anonymized_at"] is not None:
        raise Conflict("会员已注销，不能打标签", field="member_id")


_ADD = """
WITH added AS (
    INSERT INTO member_tag (tag_id, member_id, added_at, added_by_id)
    SELECT :tag, id, :now, :staff FROM unnest(CAST(:members AS integer[])) AS id
    ON CONFLICT (tag_id, member_id) DO NOTHING
    RETURNING member_id
), history AS (
    INSERT INTO member_tag_history (merchant_id, tag_id, tag_name, member_id, change, at, staff_id, reason)
    SELECT :merchant, :tag, :tag_name, member_id, 'added', :now, :staff, :reason FROM added
)
SELECT count(*) AS changed FROM added
"""
_REMOVE = """
WITH removed AS (
    DELETE FROM member_tag WHERE tag_id = :tag AND member_id = ANY(CAST(:members AS integer[]))
    RETURNING member_id
), history AS (
    INSERT INTO member_tag_history (merchant_id, tag_id, tag_name, member_id, change, at, staff_id, reason)
    SELECT :merchant, :tag, :tag_name, member_id, 'removed', :now, :staff, :reason FROM removed
)
SELECT count(*) AS changed FROM removed
"""


async def _change(
    tag: Tag, action: Action, members: list[int], *, staff_id: int, now: datetime, reason: str
) -> int:
    """Within the caller's transaction, the tag row locked: add or remove; the tag's count follows."""
    row = await queries.fetch_one(
        _ADD if action == "add" else _REMOVE,
        tag=tag.id,
        tag_name=tag.name,
        merchant=tag.merchant_id,
        members=members,
        now=now,
        staff=staff_id,
        reason=reason,
    )
    changed = int(row["changed"])
    if changed:
        delta = changed if action == "add" else -changed
        await queries.fetch_rows(
            "UPDATE tag SET member_count = member_count + :delta, updated_at = :now WHERE id = :tag",
            delta=delta,
            now=now,
            tag=tag.id,
        )
    return changed


async def change_one(
    merchant_id: int, tag_id: int, member_id: int, action: Action, *, staff_id: int, now: datetime
) -> bool:
    """Apply (`add`) or remove the manual tag for one member; True when something changed."""
    async with in_transaction():
        tag = await get_tag(merchant_id, tag_id, lock=True)
        _manual(tag)
        await _live_member(merchant_id, member_id)
        changed = await _change(tag, action, [member_id], staff_id=staff_id, now=now, reason="manual")
        if changed:
            await audit_log.record(
                merchant_id,
                f"staff:{staff_id}",
                f"tag.{action}",
                f"member:{member_id}",
                tag_id=tag.id,
                tag=tag.name,
            )
    return bool(changed)


def _format(data: bytes) -> sheets.Format:
    return "xlsx" if data.startswith(b"PK\x03\x04") else "csv"


def _column(header: tuple[str, ...]) -> tuple[str, int]:
    """The identifying column: ("code" | "phone", its index)."""
    found: list[tuple[str, int]] = []
    for index, name in enumerate(header):
        key = name.strip().lower()
        if key in CODE_HEADERS:
            found.append(("code", index))
        elif key in PHONE_HEADERS:
            found.append(("phone", index))
    if len(found) != 1:
        raise ValidationError(
            "file 须有且只有一列会员码（会员码 / code）或手机号（手机号 / phone）", field=sheets.FIELD
        )
    return found[0]


def _cell_text(cells: tuple[sheets.Cell, ...], index: int) -> str:
    value = cells[index] if index < len(cells) else None
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _reject(row: int, value: str, reason: str, **extra: object) -> Rejection:
    return Rejection(row, value, reason, REASONS[reason].format(**extra))


async def _resolve(merchant_id: int, column: str, values: Iterable[str]) -> dict[str, list[tuple[int, bool]]]:
    """Each distinct key → the (member id, erased) of the members it names."""
    keys = sorted(set(values))
    if not keys:
        return {}
    rows = await queries.fetch_rows(
        f"SELECT id, {column} AS key, anonymized_at IS NOT NULL AS erased FROM member"  # noqa: S608 - column is code|phone
        f" WHERE merchant_id = :merchant AND {column} = ANY(CAST(:keys AS text[]))",
        merchant=merchant_id,
        keys=keys,
    )
    found: dict[str, list[tuple[int, bool]]] = {}
    for row in rows:
        found.setdefault(row["key"], []).append((int(row["id"]), bool(row["erased"])))
    return found


def _key(column: str, text: str) -> str | None:
    if column == "code":
        code = normalise_code(text)
        return code if 1 <= len(code) <= 16 else None
    try:
        return parse_phone(text)
    except DomainError:
        return None


async def _check(
    merchant_id: int, sheet: sheets.Sheet, column: str, index: int
) -> tuple[list[int], list[Rejection]]:
    keyed: list[tuple[int, str, str | None]] = []
    for number, cells in sheet.rows:
        text = _cell_text(cells, index)
        keyed.append((number, text, _key(column, text) if text else None))
    found = await _resolve(merchant_id, column, [key for _, _, key in keyed if key])
    members: list[int] = []
    first_row: dict[int, int] = {}
    rejections: list[Rejection] = []
    for number, text, key in keyed:
        if not text:
            rejections.append(_reject(number, text, "empty"))
            continue
        if key is None:
            rejections.append(
                _reject(number, text, "invalid", what="会员码" if column == "code" else "手机号")
            )
            continue
        matches = found.get(key, [])
        live = [member for member, erased in matches if not erased]
        if not matches:
            rejections.append(_reject(number, text, "unknown"))
        elif not live:
            rejections.append(_reject(number, text, "erased"))
        elif len(live) > 1:
            rejections.append(_reject(number, text, "shared"))
        elif live[0] in first_row:
            rejections.append(_reject(number, text, "duplicate", first=first_row[live[0]]))
        else:
            first_row[live[0]] = number
            members.append(live[0])
    return members, rejections


async def bulk(
    merchant_id: int,
    tag_id: int,
    data: bytes,
    action: Action,
    *,
    staff_id: int,
    now: datetime,
    dry_run: bool = False,
) -> BulkReport:
    """Check every row of the file; with no rejected row (and not a dry run), apply them all at once."""
    tag = await get_tag(merchant_id, tag_id)
    _manual(tag)
    sheet = await asyncio.to_thread(sheets.read_sheet, data, _format(data), max_rows=MAX_ROWS)
    column, index = _column(sheet.header)
    members, rejections = await _check(merchant_id, sheet, column, index)
    report = BulkReport(
        action=action,
        column=column,
        rows=len(sheet.rows),
        applied=False,
        changed=0,
        unchanged=0,
        rejected=len(rejections),
        rejections=rejections[:MAX_REJECTIONS],
    )
    if rejections or dry_run or not members:
        return report
    async with in_transaction():
        tag = await get_tag(merchant_id, tag_id, lock=True)
        _manual(tag)
        # Checked outside the lock: a member erased meanwhile is refused, and nothing is applied.
        erased = await queries.fetch_rows(
            "SELECT id FROM member WHERE id = ANY(CAST(:members AS integer[])) AND anonymized_at IS NOT NULL",
            members=members,
        )
        if erased:
            raise Conflict("文件中有会员刚刚被注销，请重新上传", field=sheets.FIELD)
        changed = await _change(tag, action, members, staff_id=staff_id, now=now, reason="bulk")
        await audit_log.record(
            merchant_id,
            f"staff:{staff_id}",
            f"tag.bulk_{action}",
            f"tag:{tag.id}",
            tag=tag.name,
            sha256=hashlib.sha256(data).hexdigest(),
            rows=len(members),
            changed=changed,
        )
    if changed >= recompute.ANALYZE_AFTER:
        await recompute.after_bulk_write()
    return BulkReport(
        action=action,
        column=column,
        rows=len(sheet.rows),
        applied=True,
        changed=changed,
        unchanged=len(members) - changed,
        rejected=0,
    )
