"""Reminders a member gets before something lapses: each selects what lapses soon and is not yet
reminded, in keyset batches, and queues one notice per thing (its event key), so a job run twice, or
every hour, reminds once. Erased members get none.

- `coupons_expiring`: an unused coupon lapsing within three days (one per coupon);
- `points_expiring`: points lapsing within 30 merchant-local days, one per lot batch — the member's
  available lots that lapse on one local date — with their sum, never more than the member's balance
  (a member in debt or at zero is not reminded);
- `pickups_due`: a mall pick-up still awaiting collection whose deadline is tomorrow, merchant-local
  (one per order).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.transactions import in_transaction

from handlers.core import queries
from handlers.core.tasks import Effects, Queued
from handlers.notices.delivery import queue_notice
from models.coupon import Coupon, CouponStatus

COUPON_NOTICE_AHEAD = timedelta(days=3)
POINTS_NOTICE_DAYS = 30
BATCH = 500


async def coupons_expiring(now: datetime, effects: Effects) -> dict[str, int]:
    """Unused coupons that lapse within three days: one `coupon_expiring` notice per coupon."""
    queued: list[Queued] = []
    last_id = 0
    while True:
        batch = (
            await Coupon.filter(
                status=CouponStatus.ISSUED,
                valid_until__gt=now,
                valid_until__lte=now + COUPON_NOTICE_AHEAD,
                id__gt=last_id,
                member__anonymized_at__isnull=True,
            )
            .order_by("id")
            .limit(BATCH)
            .prefetch_related("template", "merchant")
        )
        if not batch:
            break
        last_id = batch[-1].id
        queued += await _queue_each(
            effects,
            "coupon_expiring",
            [
                (
                    coupon.merchant_id,
                    coupon.member_id,
                    f"coupon:{coupon.id}",
                    {
                        "coupon": coupon.template.name,
                        "code": coupon.code,
                        "expires_on": coupon.valid_until.astimezone(
                            ZoneInfo(coupon.merchant.timezone)
                        ).date(),
                    },
                )
                for coupon in batch
            ],
        )
    await effects.after_commit(*queued)
    return {"reminded": len(queued)}


# Lot batches (member, local expiry date) lapsing after `now` and by the local date `days` ahead; the
# coarse bound on `expires_at` lets the (status, expires_at) index narrow the lots first.
_POINTS_DUE_SQL = """
WITH due AS (
    SELECT l.merchant_id, l.member_id, (l.expires_at AT TIME ZONE m.timezone)::date AS expires_on,
           SUM(l.remaining)::bigint AS points
      FROM points_lot l JOIN merchant m ON m.id = l.merchant_id
     WHERE l.status = 'available' AND l.remaining > 0 AND l.expires_at > :now AND l.expires_at < :bound
       AND l.member_id >= :after_member
       AND (l.expires_at AT TIME ZONE m.timezone)::date
           <= (CAST(:now AS timestamptz) AT TIME ZONE m.timezone)::date + CAST(:days AS integer)
     GROUP BY l.merchant_id, l.member_id, expires_on
)
SELECT due.merchant_id, due.member_id, due.expires_on, LEAST(due.points, a.balance) AS points
  FROM due
  JOIN points_account a ON a.member_id = due.member_id
  JOIN member mb ON mb.id = due.member_id
 WHERE a.balance > 0 AND mb.anonymized_at IS NULL
   AND (due.member_id, due.expires_on) > (CAST(:after_member AS integer), CAST(:after_day AS date))
   AND NOT EXISTS (
       SELECT 1 FROM notice_delivery d
        WHERE d.merchant_id = due.merchant_id AND d.kind = 'points_expiring' AND d.member_id = due.member_id
          AND d.event_key = 'points_expiring:' || to_char(due.expires_on, 'YYYY-MM-DD'))
 ORDER BY due.member_id, due.expires_on
 LIMIT :batch
"""


async def points_expiring(now: datetime, effects: Effects) -> dict[str, int]:
    """Points lapsing within 30 merchant-local days: one `points_expiring` notice per member and date."""
    queued: list[Queued] = []
    after: tuple[int, date] = (0, date.min)
    while True:
        rows = await queries.fetch_rows(
            _POINTS_DUE_SQL,
            now=now,
            bound=now + timedelta(days=POINTS_NOTICE_DAYS + 2),
            days=POINTS_NOTICE_DAYS,
            after_member=after[0],
            after_day=after[1],
            batch=BATCH,
        )
        if not rows:
            break
        after = (rows[-1]["member_id"], rows[-1]["expires_on"])
        queued += await _queue_each(
            effects,
            "points_expiring",
            [
                (
                    row["merchant_id"],
                    row["member_id"],
                    f"points_expiring:{row['expires_on'].isoformat()}",
                    {"points": int(row["points"]), "expires_on": row["expires_on"].isoformat()},
                )
                for row in rows
            ],
        )
    await effects.after_commit(*queued)
    return {"reminded": len(queued)}


# Open pick-ups whose deadline is on the merchant-local day after `now`'s (at most two days ahead).
_PICKUPS_DUE_SQL = """
SELECT o.id, o.merchant_id, o.member_id, o.pickup_code, o.pickup_deadline, i.name AS item, m.timezone
  FROM mall_order o
  JOIN merchant m ON m.id = o.merchant_id
  JOIN mall_item i ON i.id = o.item_id
  JOIN member mb ON mb.id = o.member_id
 WHERE o.status = 'awaiting_pickup' AND o.pickup_deadline > :now AND o.pickup_deadline < :bound
   AND (o.pickup_deadline AT TIME ZONE m.timezone)::date
       = (CAST(:now AS timestamptz) AT TIME ZONE m.timezone)::date + 1
   AND mb.anonymized_at IS NULL AND o.id > :after
   AND NOT EXISTS (
       SELECT 1 FROM notice_delivery d
        WHERE d.merchant_id = o.merchant_id AND d.kind = 'pickup_deadline' AND d.member_id = o.member_id
          AND d.event_key = 'order:' || o.id)
 ORDER BY o.id
 LIMIT :batch
"""


async def pickups_due(now: datetime, effects: Effects) -> dict[str, int]:
    """Pick-ups whose deadline is tomorrow, merchant-local: one `pickup_deadline` notice per order."""
    queued: list[Queued] = []
    after = 0
    while True:
        rows = await queries.fetch_rows(
            _PICKUPS_DUE_SQL, now=now, bound=now + timedelta(days=3), after=after, batch=BATCH
        )
        if not rows:
            break
        after = rows[-1]["id"]
        queued += await _queue_each(
            effects,
            "pickup_deadline",
            [
                (
                    row["merchant_id"],
                    row["member_id"],
                    f"order:{row['id']}",
                    {
                        "item": row["item"],
                        "code": row["pickup_code"] or "",
                        "deadline": _local(row["pickup_deadline"], row["timezone"]),
                    },
                )
                for row in rows
            ],
        )
    await effects.after_commit(*queued)
    return {"reminded": len(queued)}


async def _queue_each(
    effects: Effects, kind: str, notices: list[tuple[int, int, str, dict[str, Any]]]
) -> list[Queued]:
    """Queue one batch's notices (merchant, member, event key, context) in one transaction."""
    queued: list[Queued] = []
    async with in_transaction():
        for merchant_id, member_id, event_key, context in notices:
            notice = await queue_notice(
                effects,
                kind,
                merchant_id=merchant_id,
                member_id=member_id,
                event_key=event_key,
                context=context,
            )
            if notice is not None:
                queued.append(notice)
    return queued


def _local(moment: datetime, tz: str) -> str:
    return moment.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
