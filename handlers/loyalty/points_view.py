"""What a member sees of their points: the summary and their ledger, newest first.

Reading never writes a ledger row, except that lapsed lots the expiry job has not reached yet are
expired first through the ledger (`points_ledger.expire_member`), so the balance shown is spendable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.expressions import Q

from handlers.core.errors import ValidationError
from handlers.loyalty import ledger as points_ledger
from models.points import LotStatus, PointsAccount, PointsKind, PointsLot, PointsTransaction

EXPIRING_DAYS = 30
DEFAULT_PAGE = 20
MAX_PAGE = 100

KIND_LABELS: dict[PointsKind, str] = {
    PointsKind.EARN_PURCHASE: "消费积分",
    PointsKind.EARN_CHECKIN: "签到积分",
    PointsKind.EARN_REFERRAL: "推荐奖励",
    PointsKind.EARN_REGISTRATION: "注册奖励",
    PointsKind.EARN_PROFILE: "完善资料奖励",
    PointsKind.EARN_PROMOTION: "活动奖励",
    PointsKind.EARN_TIER_GIFT: "升级礼包",
    PointsKind.GRANT: "赠送积分",
    PointsKind.OPENING: "期初积分",
    PointsKind.SPEND_REDEMPTION: "积分兑换",
    PointsKind.SPEND_OFFSET: "积分抵现",
    PointsKind.SPEND_UPGRADE: "积分升级",
    PointsKind.SPEND_MAKEUP: "补签",
    PointsKind.EXPIRE: "积分过期",
    PointsKind.REVERSE: "撤销",
    PointsKind.ADJUST: "积分调整",
}


def kind_label(kind: str) -> str:
    try:
        return KIND_LABELS[PointsKind(kind)]
    except ValueError:
        return kind


@dataclass(frozen=True, slots=True)
class PointsSummary:
    balance: int
    pending: int  # earned, waiting for the refund window to pass
    lifetime_earned: int
    expiring: int  # points that expire within EXPIRING_DAYS
    expiring_first_at: datetime | None  # the earliest of those expiries


@dataclass(frozen=True, slots=True)
class LedgerRow:
    id: int
    delta: int
    kind: PointsKind
    label: str
    reason: str
    balance_after: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerPage:
    rows: list[LedgerRow]
    next_cursor: int | None  # pass as `cursor` for the next (older) page; None: no more rows


async def summary(merchant_id: int, member_id: int, *, now: datetime) -> PointsSummary:
    lapsed = PointsLot.filter(
        member_id=member_id, status=LotStatus.AVAILABLE, remaining__gt=0, expires_at__lte=now
    )
    if await lapsed.exists():
        await points_ledger.expire_member(merchant_id, member_id, now)
    account = await PointsAccount.get_or_none(merchant_id=merchant_id, member_id=member_id)
    soon = await PointsLot.filter(
        Q(expires_at__gt=now) & Q(expires_at__lte=now + timedelta(days=EXPIRING_DAYS)),
        merchant_id=merchant_id,
        member_id=member_id,
        status=LotStatus.AVAILABLE,
        remaining__gt=0,
    ).order_by("expires_at")
    if account is None:
        return PointsSummary(0, 0, 0, 0, None)
    return PointsSummary(
        balance=account.balance,
        pending=account.pending,
        lifetime_earned=account.lifetime_earned,
        expiring=sum(lot.remaining for lot in soon),
        expiring_first_at=soon[0].expires_at if soon else None,
    )


async def ledger(
    merchant_id: int, member_id: int, *, cursor: int | None = None, limit: int = DEFAULT_PAGE
) -> LedgerPage:
    """The member's transactions, newest first; `cursor` is the last id of the previous page."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit 应在 1–{MAX_PAGE} 之间", field="limit")
    if cursor is not None and cursor < 1:
        raise ValidationError("cursor 无效", field="cursor")
    query = PointsTransaction.filter(merchant_id=merchant_id, member_id=member_id)
    if cursor is not None:
        query = query.filter(id__lt=cursor)
    found = await query.order_by("-id").limit(limit + 1)
    rows = [
        LedgerRow(
            id=txn.id,
            delta=txn.delta,
            kind=PointsKind(txn.kind),
            label=kind_label(txn.kind),
            reason=txn.reason,
            balance_after=txn.balance_after,
            created_at=txn.created_at,
        )
        for txn in found[:limit]
    ]
    return LedgerPage(rows, rows[-1].id if len(found) > limit else None)
