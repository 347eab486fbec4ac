"""What members and merchants see of notices: a member's recent notices, one member's delivery
records, and counts per kind and outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from handlers.core import queries
from handlers.notices.catalog import KINDS
from models.notice import DeliveryStatus, NoticeDelivery

MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class Count:
    kind: str
    label: str
    status: str
    count: int


def label(kind: str) -> str:
    found = KINDS.get(kind)
    return found.label if found is not None else kind


async def member_notices(merchant_id: int, member_id: int, *, limit: int = 20) -> list[NoticeDelivery]:
    """The member's notices that reached them, newest first (what the mini-program lists)."""
    return await (
        NoticeDelivery.filter(merchant_id=merchant_id, member_id=member_id, status=DeliveryStatus.SENT)
        .order_by("-id")
        .limit(max(1, min(limit, MAX_PAGE)))
    )


async def deliveries(
    merchant_id: int, member_id: int, *, before: int | None = None, limit: int = 50
) -> list[NoticeDelivery]:
    """Every delivery record of one member, newest first (keyset: ids below `before`)."""
    query = NoticeDelivery.filter(merchant_id=merchant_id, member_id=member_id)
    if before is not None:
        query = query.filter(id__lt=before)
    return await query.order_by("-id").limit(max(1, min(limit, MAX_PAGE)))


_COUNTS_SQL = """
SELECT kind, status, count(*) AS n FROM notice_delivery
 WHERE merchant_id = :merchant AND created_at >= :since AND created_at < :until
 GROUP BY kind, status ORDER BY kind, status
"""


async def counts(merchant_id: int, *, since: datetime, until: datetime) -> list[Count]:
    """How many notices of each kind ended how, created in [since, until)."""
    rows = await queries.fetch_rows(_COUNTS_SQL, merchant=merchant_id, since=since, until=until)
    return [Count(row["kind"], label(row["kind"]), row["status"], int(row["n"])) for row in rows]
