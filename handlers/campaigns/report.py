"""What a campaign did and earned: delivery counts (live while sending), and conversion — members with
a completed, not refunded purchase within `conversion_days` of being planned — of the messaged group
against the holdout, with the uplift and its 95% confidence interval; coupon redemptions of the
attachment. The recipient list streams as CSV (keyset pages)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from handlers.core import queries
from handlers.rules import campaigns as rules
from models.campaign import Campaign

CSV_PAGE = 2000
CSV_COLUMNS = ("member_code", "status", "reason", "errcode", "msgid", "attempts", "sent_at")

_STATUS_SQL = """
SELECT status, count(*) AS n FROM campaign_recipient WHERE campaign_id = :campaign GROUP BY status
"""
_REASONS_SQL = """
SELECT reason, count(*) AS n FROM campaign_recipient
 WHERE campaign_id = :campaign AND status IN ('skipped', 'failed') GROUP BY reason ORDER BY n DESC LIMIT 20
"""
# The messaged group: recipients WeChat (or the provider) took; the holdout: never messaged.
_CONVERSION_SQL = """
SELECT r.status AS grp, count(*) AS members, count(p.member_id) AS converted,
       COALESCE(sum(p.orders), 0) AS orders, COALESCE(sum(p.revenue), 0) AS revenue
  FROM campaign_recipient r
  LEFT JOIN LATERAL (
        SELECT member_id, count(*) AS orders, sum(paid_fen) AS revenue FROM purchase
         WHERE member_id = r.member_id AND status = 'completed'
           AND created_at >= r.created_at AND created_at < r.created_at + make_interval(days => :days)
         GROUP BY member_id
  ) AS p ON TRUE
 WHERE r.campaign_id = :campaign AND r.status IN ('sent', 'holdout')
 GROUP BY r.status
"""
_COUPONS_SQL = """
SELECT count(*) AS issued, count(*) FILTER (WHERE status = 'used') AS redeemed,
       COALESCE(sum(discount_fen) FILTER (WHERE status = 'used'), 0) AS discount_fen
  FROM coupon WHERE merchant_id = :merchant AND source = 'campaign' AND issue_key LIKE :prefix
"""


@dataclass(frozen=True, slots=True)
class Group:
    members: int
    converted: int
    orders: int
    revenue_fen: int


@dataclass(frozen=True, slots=True)
class Report:
    counts: dict[str, int]
    reasons: dict[str, int]
    messaged: Group
    holdout: Group
    uplift: rules.Uplift
    coupons_issued: int
    coupons_redeemed: int
    coupon_discount_fen: int


async def counts(campaign_id: int) -> dict[str, int]:
    found = rules.counts_by(await queries.fetch_rows(_STATUS_SQL, campaign=campaign_id), "status")
    return {s: found.get(s, 0) for s in ("pending", "sending", "sent", "failed", "skipped", "holdout")}


async def report(campaign: Campaign) -> Report:
    groups = {
        str(row["grp"]): Group(
            int(row["members"]), int(row["converted"]), int(row["orders"]), int(row["revenue"])
        )
        for row in await queries.fetch_rows(
            _CONVERSION_SQL, campaign=campaign.id, days=campaign.conversion_days
        )
    }
    messaged, holdout = groups.get("sent", Group(0, 0, 0, 0)), groups.get("holdout", Group(0, 0, 0, 0))
    coupons = (
        await queries.fetch_rows(
            _COUPONS_SQL, merchant=campaign.merchant_id, prefix=f"campaign:{campaign.id}:%"
        )
    )[0]
    return Report(
        counts=await counts(campaign.id),
        reasons=rules.counts_by(await queries.fetch_rows(_REASONS_SQL, campaign=campaign.id), "reason"),
        messaged=messaged,
        holdout=holdout,
        uplift=rules.uplift(messaged.members, messaged.converted, holdout.members, holdout.converted),
        coupons_issued=int(coupons["issued"]),
        coupons_redeemed=int(coupons["redeemed"]),
        coupon_discount_fen=int(coupons["discount_fen"]),
    )


_PAGE_SQL = """
SELECT r.id, m.code AS member_code, r.status, r.reason, r.errcode, r.msgid, r.attempts, r.sent_at
  FROM campaign_recipient r JOIN member m ON m.id = r.member_id
 WHERE r.campaign_id = :campaign AND r.id > :after
 ORDER BY r.id
 LIMIT :limit
"""


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text  # no formulas in a spreadsheet


async def recipients_csv(campaign_id: int) -> AsyncIterator[bytes]:
    """The recipient list with outcomes, as UTF-8 CSV (with BOM, for spreadsheet programs), page by page."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    yield ("\ufeff" + buffer.getvalue()).encode()
    after = 0
    while True:
        rows = await queries.fetch_rows(_PAGE_SQL, campaign=campaign_id, after=after, limit=CSV_PAGE)
        if not rows:
            return
        buffer.seek(0)
        buffer.truncate()
        for row in rows:
            writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
        yield buffer.getvalue().encode()
        after = int(rows[-1]["id"])
