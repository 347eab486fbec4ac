"""One member's page in the back office: the overview, and each collection that can grow long as its
own keyset page (newest first; the cursor is the last id of the previous page).

The overview reads what the member sees themselves — tier and progress (`tiers.current`), the points
summary (`points_view.summary`, which first expires lapsed lots as every reader does), the stored value
— plus the credit account (limit, owed, and how much of it is overdue now: `handlers.credit.overdue`),
the acquiring store and staff, the referrer and how many members they referred, and the service cards
(a member holds a handful; listed whole). An erased member is 404, as everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from tortoise.models import Model
from tortoise.queryset import QuerySet

from handlers.core.errors import ValidationError
from handlers.credit import ledger as credit
from handlers.credit import overdue
from handlers.loyalty import points_view, tiers
from handlers.loyalty.points_view import PointsSummary
from handlers.loyalty.tiers import TierView
from handlers.members import lookup as members
from handlers.staff.scope import Scope
from handlers.wallet import ledger as wallet
from handlers.wallet import service_cards
from handlers.wallet.service_cards import CardView
from models.credit import CreditEntry
from models.loyalty import TierChange
from models.member import Member
from models.merchant import Merchant, Store
from models.points import PointsLot
from models.purchase import Purchase
from models.staff import Staff
from models.wallet import WalletTransaction

M = TypeVar("M", bound=Model)
OVERVIEW_ROWS = 10  # rows of each collection on the page itself
MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class Overview:
    member: Member
    store: Store | None
    acquired_by: Staff | None
    tier: TierView
    points: PointsSummary
    wallet: wallet.Balance
    referrer: Member | None  # None also when the referrer was erased
    referrals: int  # members this one referred (erased ones not counted)
    service_cards: list[CardView]
    credit: credit.Account
    credit_overdue_fen: int  # of what is owed, the part past its due date now


async def overview(merchant: Merchant, member_id: int, *, now: datetime) -> Overview:
    member = await members.resolve(merchant, member_id=member_id)
    store = await Store.get_or_none(id=member.store_id) if member.store_id else None
    staff = await Staff.get_or_none(id=member.acquired_by_id) if member.acquired_by_id else None
    referrer = None
    if member.referrer_id is not None:
        referrer = await Member.get_or_none(
            id=member.referrer_id, merchant_id=merchant.id, anonymized_at=None
        )
    return Overview(
        member=member,
        store=store,
        acquired_by=staff,
        tier=await tiers.current(merchant, member.id, now=now),
        points=await points_view.summary(merchant.id, member.id, now=now),
        wallet=await wallet.balance(merchant.id, member.id),
        referrer=referrer,
        referrals=await _referred(merchant.id, member.id).count(),
        service_cards=await service_cards.member_cards(merchant.id, member.id, now),
        credit=await credit.balance(merchant.id, member.id),
        credit_overdue_fen=await _overdue_fen(merchant, member.id, now),
    )


async def _overdue_fen(merchant: Merchant, member_id: int, now: datetime) -> int:
    found = await overdue.overdue(merchant, now, scope=Scope(merchant.id, None), member_id=member_id)
    return found[0].overdue_fen if found else 0


def check_page(cursor: int | None, limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit 须在 1–{MAX_PAGE} 之间", field="limit")
    if cursor is not None and cursor < 1:
        raise ValidationError("cursor 无效", field="cursor")


async def keyset(query: QuerySet[M], *, cursor: int | None, limit: int) -> tuple[list[M], int | None]:
    """`limit` rows of `query` with an id below `cursor`, newest first, and the next page's cursor."""
    check_page(cursor, limit)
    if cursor is not None:
        query = query.filter(id__lt=cursor)
    rows = await query.order_by("-id").limit(limit + 1)
    found: list[M] = rows[:limit]
    return found, int(found[-1].pk) if len(rows) > limit else None


def _referred(merchant_id: int, member_id: int) -> QuerySet[Member]:
    return Member.filter(merchant_id=merchant_id, referrer_id=member_id, anonymized_at=None)


def tier_history(merchant_id: int, member_id: int) -> QuerySet[TierChange]:
    return TierChange.filter(merchant_id=merchant_id, member_id=member_id)


def points_lots(merchant_id: int, member_id: int) -> QuerySet[PointsLot]:
    """Every lot of the member (what each earn left, and when it expires)."""
    return PointsLot.filter(merchant_id=merchant_id, member_id=member_id)


def wallet_ledger(merchant_id: int, member_id: int) -> QuerySet[WalletTransaction]:
    return WalletTransaction.filter(merchant_id=merchant_id, member_id=member_id)


def credit_ledger(merchant_id: int, member_id: int) -> QuerySet[CreditEntry]:
    return credit.entries(merchant_id, member_id)


def purchases(merchant_id: int, member_id: int) -> QuerySet[Purchase]:
    return Purchase.filter(merchant_id=merchant_id, member_id=member_id)


def referrals(merchant_id: int, member_id: int) -> QuerySet[Member]:
    """The members this one referred (level 1), erased ones left out."""
    return _referred(merchant_id, member_id)
