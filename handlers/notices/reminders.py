"""Reminders a member gets before something lapses: each selects what lapses soon and queues one notice
per thing (its event key), so a job run twice, or every hour, reminds once."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from tortoise.transactions import in_transaction

from handlers.core.tasks import Effects, Queued
from handlers.notices.delivery import queue_notice
from models.coupon import Coupon, CouponStatus

COUPON_NOTICE_AHEAD = timedelta(days=3)
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
        async with in_transaction():
            for coupon in batch:
                expires_on = coupon.valid_until.astimezone(ZoneInfo(coupon.merchant.timezone)).date()
                notice = await queue_notice(
                    effects,
                    "coupon_expiring",
                    merchant_id=coupon.merchant_id,
                    member_id=coupon.member_id,
                    event_key=f"coupon:{coupon.id}",
                    context={"coupon": coupon.template.name, "code": coupon.code, "expires_on": expires_on},
                )
                if notice is not None:
                    queued.append(notice)
    await effects.after_commit(*queued)
    return {"reminded": len(queued)}
