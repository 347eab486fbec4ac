"""Who a campaign is for: the one door campaigns use to reach an audience.

Streams member ids in keyset pages (never loads them all), from member id `after` on (a resumed plan
goes on where it stopped). Without a segment: every member of the merchant who is neither erased nor
blocked. With one: the segment's saved expression, compiled by `handlers.segments.audience` (as of the
page's query), blocked members left out. The channel's reach is the governor's business, member by
member, so the report says why each one was skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from handlers.core import queries
from handlers.core.errors import NotFound, ValidationError
from handlers.segments import audience as segments

PAGE = 1000
MEMBER_ID = segments.MEMBER_ID  # the member's id in `segment_where`'s FROM clause

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


async def check_segment(merchant_id: int, segment_id: int | None) -> None:
    """A segment the merchant has (400 naming `segment_id` otherwise)."""
    if segment_id is not None:
        await _expression(merchant_id, segment_id)


async def _expression(merchant_id: int, segment_id: int) -> dict[str, Any]:
    try:
        return await segments.load_expression(merchant_id, segment_id)
    except NotFound:
        raise ValidationError("segment_id：没有这个人群", field="segment_id") from None


async def segment_where(merchant_id: int, segment_id: int) -> tuple[str, str, dict[str, Any]]:
    """(FROM clause, WHERE condition, its parameters) of the segment now, blocked members left out; the
    member's id is `segments.MEMBER_ID` (erased members have no row to select)."""
    compiled = await segments.compile_for(merchant_id, await _expression(merchant_id, segment_id))
    where = f"({compiled.where}) AND NOT f.blocked"
    return compiled.from_clause(), where, dict(compiled.params)


async def count(merchant_id: int, segment_id: int | None) -> int:
    if segment_id is None:
        return int((await queries.fetch_one(_COUNT_SQL, merchant=merchant_id))["n"])
    source, where, params = await segment_where(merchant_id, segment_id)
    sql = f"SELECT count(*) AS n FROM {source} WHERE {where}"  # noqa: S608 - compiled, values bound
    return int((await queries.fetch_one(sql, **params))["n"])


async def iter_member_ids(
    merchant_id: int, segment_id: int | None, *, after: int = 0, batch: int = PAGE
) -> AsyncIterator[list[int]]:
    """Pages of member ids in ascending order, starting after member id `after`."""
    if segment_id is None:
        sql, params = _PAGE_SQL, {"merchant": merchant_id}
    else:
        source, where, params = await segment_where(merchant_id, segment_id)
        sql = (
            f"SELECT {MEMBER_ID} AS id FROM {source} WHERE {where}"  # noqa: S608 - compiled, values bound
            f" AND {MEMBER_ID} > :after ORDER BY {MEMBER_ID} LIMIT :limit"
        )
    while True:
        rows = await queries.fetch_rows(sql, **params, after=after, limit=batch)
        if not rows:
            return
        ids = [int(row["id"]) for row in rows]
        yield ids
        after = ids[-1]
