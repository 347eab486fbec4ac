"""What the back office reads about tags: a member's tags and their history, a tag's members."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from handlers.core import queries
from handlers.core.errors import ErrorCode, NotFound

MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class HeldTag:
    tag_id: int
    name: str
    kind: str
    added_at: datetime
    added_by: int | None  # staff id; None: by its rule


@dataclass(frozen=True, slots=True)
class HistoryRow:
    id: int
    tag_id: int
    tag_name: str
    change: str
    at: datetime
    staff_id: int | None
    rule_version: int | None
    reason: str


async def _member(merchant_id: int, member_id: int) -> None:
    rows = await queries.fetch_rows(
        "SELECT 1 FROM member WHERE id = :member AND merchant_id = :merchant",
        member=member_id,
        merchant=merchant_id,
    )
    if not rows:
        raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND, field="member_id")


async def member_tags(merchant_id: int, member_id: int) -> list[HeldTag]:
    await _member(merchant_id, member_id)
    rows = await queries.fetch_rows(
        """SELECT t.id, t.name, t.kind, mt.added_at, mt.added_by_id
             FROM member_tag mt JOIN tag t ON t.id = mt.tag_id
            WHERE mt.member_id = :member AND t.merchant_id = :merchant
            ORDER BY t.name, t.id""",
        member=member_id,
        merchant=merchant_id,
    )
    return [HeldTag(r["id"], r["name"], r["kind"], r["added_at"], r["added_by_id"]) for r in rows]


async def member_history(
    merchant_id: int, member_id: int, *, before: int | None, limit: int
) -> tuple[list[HistoryRow], int | None]:
    """Newest first; the cursor is the last row's id."""
    await _member(merchant_id, member_id)
    rows = await queries.fetch_rows(
        """SELECT id, tag_id, tag_name, change, at, staff_id, rule_version, reason FROM member_tag_history
            WHERE member_id = :member AND merchant_id = :merchant AND id < :before
            ORDER BY id DESC LIMIT :limit""",
        member=member_id,
        merchant=merchant_id,
        before=before or 2**62,
        limit=limit + 1,
    )
    page = [HistoryRow(**r) for r in rows[:limit]]
    return page, page[-1].id if len(rows) > limit else None
