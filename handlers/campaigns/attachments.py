"""A campaign's attachment: a coupon or points granted with the delivery, once per recipient, through
the ledgers (`handlers.coupons.issue`, `handlers.loyalty.ledger`) under the natural key
`campaign:<campaign>:<member>` — a resend after a crash replays the first grant instead of a second."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from handlers.campaigns.governor import Claimed
from handlers.core.errors import DomainError
from handlers.coupons import issue as coupons
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger
from handlers.rules.expiry import expiry_date
from models.campaign import Campaign
from models.merchant import Merchant
from models.points import PointsKind

log = logging.getLogger(__name__)
SOURCE = "campaign"


class HasReason(Protocol):
    reason: str


def key(campaign_id: int, member_id: int) -> str:
    return f"campaign:{campaign_id}:{member_id}"


async def grant(
    campaign: Campaign,
    merchant: Merchant,
    sent: Sequence[Claimed],
    outcomes: MutableMapping[int, Any],
    now: datetime,
) -> None:
    """Grant the attachment to each recipient just sent; one that cannot be granted (stock out, a
    blocked member…) keeps its `sent` and says why in its reason."""
    if not sent or (campaign.attach_coupon_template_id is None and campaign.attach_points <= 0):
        return
    expires = None
    if campaign.attach_points > 0:
        program = await loyalty_config.program(merchant.id)
        expires = expiry_date(now, program.expiry, merchant.timezone)
    for recipient in sent:
        try:
            if campaign.attach_coupon_template_id is not None:
                await coupons.issue(
                    merchant,
                    recipient.member_id,
                    campaign.attach_coupon_template_id,
                    source=SOURCE,
                    key=key(campaign.id, recipient.member_id),
                    now=now,
                    actor=f"campaign:{campaign.id}",
                )
            if campaign.attach_points > 0:
                await ledger.credit(
                    merchant.id,
                    recipient.member_id,
                    campaign.attach_points,
                    PointsKind.EARN_PROMOTION,
                    key=key(campaign.id, recipient.member_id),
                    now=now,
                    expires_at=expires,
                    reference=f"campaign:{campaign.id}",
                    reason=f"活动赠送：{campaign.name}"[:200],
                )
        except DomainError as exc:
            log.warning("campaign attachment not granted", extra={"campaign": campaign.id, "code": exc.code})
            outcome: HasReason = outcomes[recipient.recipient_id]
            outcome.reason = f"attachment:{exc.code}"[:64]
