"""Who a campaign is for: the one door campaigns use to reach an audience.

Streams member ids in keyset pages (never loads them all). Without a segment: every member of the
merchant who is neither erased nor blocked; the channel's reach is the governor's business, member by
member, so the report says why each one was skipped. Segments (`segment_id`) are another helper's
`handlers.segments.audience`; until it is on main a campaign cannot name one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from handlers.core import queries
from handlers.core.errors import ValidationError

PAGE = 1000

_PAGE_SQL = """
SELECT id FROM member
 WHERE merchant_id = :merchant AND id > :after AND anonymized_at IS NULL AND blocked_at IS NULL
 ORDER BY id
 LIMIT :limit
"""
_COUNT_SQL = """
SELECT count(*) AS n FROM member
 WHERE merchant_id = :merchant AND anonymized_at IS NULL AND blocked_at IS NULL
"""


def check_segment(segment_id: int | None) -> None:
    """Refuse a segment while segments are not available to campaigns."""
    if segment_id is not None:
        raise ValidationError(
            "segment_id：会员分群尚未启用，请先不指定分群（发送给全部会员）", field="segment_id"
        )


async def count(merchant_id: int, segment_id: int | None) -> int:
    check_segment(segment_id)
    rows = await queries.fetch_rows(_COUNT_SQL, merchant=merchant_id)
    return int(rows[0]["n"])


async def iter_member_ids(
    merchant_id: int, segment_id: int | None, *, after: int = 0, batch: int = PAGE
) -> AsyncIterator[list[int]]:
    """Pages of member ids in ascending order, starting after member id `after` (a resumed plan)."""
    check_segment(segment_id)
    while True:
        rows = await queries.fetch_rows(_PAGE_SQL, merchant=merchant_id, after=after, limit=batch)
        if not rows:
            return
        ids = [int(row["id"]) for row in rows]
        yield ids
        after = ids[-1]
