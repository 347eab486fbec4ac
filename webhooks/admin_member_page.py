"""One member's page in the back office (manager and up): the overview with the first rows of each
collection, and each collection's own keyset pages (`?cursor=<next_cursor>&limit=1..100`, newest
first). The notices collection pages through `GET /api/admin/members/{member_id}/notices`
(`?before=<next_before>`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pydantic import Field

from handlers.coupons import redeem as coupons
from handlers.directory import page
from handlers.loyalty import points_view
from handlers.mall import catalogue
from handlers.members import lookup as members
from handlers.members import notes
from handlers.notices import views
from handlers.tags import views as tag_views
from models.loyalty import TierChange
from models.member import Member
from models.merchant import Merchant
from models.points import LotStatus, PointsLot
from models.purchase import Purchase, PurchaseStatus
from webhooks.admin_mall import OrderOut, order_out
from webhooks.admin_members import MemberPath, NotesOut, PageQuery, ProfileOut, note_out, profile_out
from webhooks.api import Call, Out, Routes
from webhooks.auth import MANAGER
from webhooks.coupons import AdminCouponOut, coupon_out
from webhooks.credit import CreditEntryOut, entry_out
from webhooks.mp_loyalty import LedgerOut, PointsOut, TierOut, ledger_out, points_out, tier_out
from webhooks.notices import DeliveryOut, delivery_out
from webhooks.service_cards import ServiceCardOut, card_out
from webhooks.wallet import WalletTransactionOut, transaction_out

routes = Routes("admin_member_page")
FIRST = page.OVERVIEW_ROWS
Loader = Callable[[Merchant, int, int | None, int], Awaitable[Out]]


class StaffRefOut(Out):
    id: int
    username: str


class StoreRefOut(Out):
    id: int
    code: str
    name: str


class MemberRefOut(Out):
    id: int
    code: str
    name: str | None
    registered_at: datetime


class TierChangeOut(Out):
    id: int
    from_code: str
    to_code: str
    reason: str = Field(examples=["upgrade", "downgrade", "purchase_upgrade"])
    created_at: datetime


class TierHistoryOut(Out):
    items: list[TierChangeOut]
    next_cursor: int | None


class LotOut(Out):
    id: int
    amount: int
    remaining: int
    status: LotStatus
    earned_at: datetime
    available_at: datetime | None = Field(description="when pending points become spendable")
    expires_at: datetime | None = Field(description="null: never expires")


class LotsOut(Out):
    items: list[LotOut]
    next_cursor: int | None


class WalletLedgerOut(Out):
    items: list[WalletTransactionOut]
    next_cursor: int | None


class WalletSummaryOut(Out):
    principal_fen: int
    bonus_fen: int
    total_fen: int
    lifetime_top_up_fen: int


class CreditSummaryOut(Out):
    limit_fen: int = Field(description="the credit limit a manager set (0: no credit)")
    owed_fen: int
    available_fen: int
    overdue_fen: int = Field(description="of what is owed, the part past its due date now (FIFO repayments)")


class CreditLedgerOut(Out):
    items: list[CreditEntryOut]
    next_cursor: int | None


class CouponsOut(Out):
    items: list[AdminCouponOut]
    next_cursor: int | None


class OrdersOut(Out):
    items: list[OrderOut]
    next_cursor: int | None


class PurchaseOut(Out):
    id: int
    amount_fen: int
    discount_fen: int
    offset_points: int
    offset_fen: int
    paid_fen: int
    points_earned: int
    status: PurchaseStatus
    store_id: int | None
    staff_id: int | None
    created_at: datetime
    refunded_at: datetime | None


class PurchasesOut(Out):
    items: list[PurchaseOut]
    next_cursor: int | None


class ReferralsOut(Out):
    items: list[MemberRefOut]
    next_cursor: int | None


class NoticesOut(Out):
    items: list[DeliveryOut]
    next_before: int | None = Field(
        description="pass as ?before= to GET /api/admin/members/{member_id}/notices"
    )


class MemberPageOut(Out):
    profile: ProfileOut
    store: StoreRefOut | None = Field(description="the acquiring store")
    acquired_by: StaffRefOut | None = Field(description="the staff whose QR brought the member in")
    tier: TierOut
    tier_history: TierHistoryOut
    points: PointsOut
    points_ledger: LedgerOut
    points_lots: LotsOut
    wallet: WalletSummaryOut
    wallet_ledger: WalletLedgerOut
    credit: CreditSummaryOut
    credit_ledger: CreditLedgerOut
    coupons: CouponsOut
    service_cards: list[ServiceCardOut]
    mall_orders: OrdersOut
    purchases: PurchasesOut
    tags: list[str] = Field(description="the names of the tags the member holds (manual and automatic)")
    referrer: MemberRefOut | None
    referrals_count: int
    referrals: ReferralsOut
    notices: NoticesOut
    notes: NotesOut


def _member_ref(member: Member) -> MemberRefOut:
    return MemberRefOut(id=member.id, code=member.code, name=member.name, registered_at=member.registered_at)


def _purchase(row: Purchase) -> PurchaseOut:
    return PurchaseOut(**{name: getattr(row, name) for name in PurchaseOut.model_fields})


def _lot(row: PointsLot) -> LotOut:
    return LotOut(**{name: getattr(row, name) for name in LotOut.model_fields})


def _change(row: TierChange) -> TierChangeOut:
    return TierChangeOut(**{name: getattr(row, name) for name in TierChangeOut.model_fields})


async def _member_id(call: Call[None, MemberPath]) -> int:
    return (await members.resolve(call.merchant, member_id=call.path.member_id)).id


async def _tier_history(merchant: Merchant, member_id: int, cursor: int | None, limit: int) -> TierHistoryOut:
    rows, after = await page.keyset(page.tier_history(merchant.id, member_id), cursor=cursor, limit=limit)
    return TierHistoryOut(items=[_change(r) for r in rows], next_cursor=after)


async def _lots(merchant: Merchant, member_id: int, cursor: int | None, limit: int) -> LotsOut:
    rows, after = await page.keyset(page.points_lots(merchant.id, member_id), cursor=cursor, limit=limit)
    return LotsOut(items=[_lot(r) for r in rows], next_cursor=after)


async def _wallet(merchant: Merchant, member_id: int, cursor: int | None, limit: int) -> WalletLedgerOut:
    rows, after = await page.keyset(page.wallet_ledger(merchant.id, member_id), cursor=cursor, limit=limit)
    return WalletLedgerOut(items=[transaction_out(r) for r in rows], next_cursor=after)


async def _credit(merchant: Merchant, member_id: int, cursor: int | None, limit: int) -> CreditLedgerOut:
    rows, after = await page.keyset(page.credit_ledger(merchant.id, member_id), cursor=cursor, limit=limit)
    return CreditLedgerOut(items=[entry_out(r) for r in rows], next_cursor=after)


async def _purchases(merchant: Merchant, member_id: int, cursor: int | None, limit: int) -> PurchasesOut:
    rows, after = await page.keyset(page.purchases(merchant.id, member_id), cursor=cursor, limit=limit)
    return PurchasesOut(items=[_purchase(r) for r in rows], next_cursor=after)


async def _referrals(merchant: Merchant, member_id: int, cursor: int | None, limit: int) -> ReferralsOut:
    rows, after = await page.keyset(page.referrals(merchant.id, member_id), cursor=cursor, limit=limit)
    return ReferralsOut(items=[_member_ref(r) for r in rows], next_cursor=after)


async def _coupons(merchant: Merchant, member_id: int, cursor: int | None, limit: int) -> CouponsOut:
    page.check_page(cursor, limit)
    found = await coupons.admin_coupons(
        merchant,
        template_id=None,
        status=None,
        member_id=member_id,
        cursor=cursor,
        limit=limit + 1,
        now=datetime.now(UTC),
    )
    items = [
        AdminCouponOut(
            **coupon_out(v, merchant).model_dump(),
            member_id=v.coupon.member_id,
            template_id=v.coupon.template_id,
        )
        for v in found[:limit]
    ]
    return CouponsOut(items=items, next_cursor=items[-1].id if len(found) > limit else None)


async def _orders(merchant: Merchant, member_id: int, cursor: int | None, limit: int) -> OrdersOut:
    page.check_page(cursor, limit)
    rows, after = await catalogue.orders_page(merchant.id, member_id=member_id, cursor=cursor, limit=limit)
    return OrdersOut(items=[order_out(r) for r in rows], next_cursor=after)


async def _notes(merchant: Merchant, member_id: int, cursor: int | None, limit: int) -> NotesOut:
    page.check_page(cursor, limit)
    rows, after = await notes.page(merchant.id, member_id, cursor=cursor, limit=limit)
    return NotesOut(items=[note_out(n) for n in rows], next_cursor=after)


async def _ledger(merchant: Merchant, member_id: int, cursor: int | None, limit: int) -> LedgerOut:
    return ledger_out(await points_view.ledger(merchant.id, member_id, cursor=cursor, limit=limit))


@routes.get("/api/admin/members/{member_id}", path_model=MemberPath, response=MemberPageOut, auth=MANAGER)
async def member_page(call: Call[None, MemberPath]) -> MemberPageOut:
    """Everything about one member, with the first rows of each collection (then page each on its own)."""
    merchant, now = call.merchant, datetime.now(UTC)
    found = await page.overview(merchant, call.path.member_id, now=now)
    member_id = found.member.id
    deliveries = await views.deliveries(merchant.id, member_id, limit=FIRST + 1)
    balance = found.wallet
    return MemberPageOut(
        profile=profile_out(found.member),
        store=StoreRefOut(id=found.store.id, code=found.store.code, name=found.store.name)
        if found.store
        else None,
        acquired_by=StaffRefOut(id=found.acquired_by.id, username=found.acquired_by.username)
        if found.acquired_by
        else None,
        tier=tier_out(found.tier),
        tier_history=await _tier_history(merchant, member_id, None, FIRST),
        points=points_out(found.points, merchant.timezone),
        points_ledger=await _ledger(merchant, member_id, None, FIRST),
        points_lots=await _lots(merchant, member_id, None, FIRST),
        wallet=WalletSummaryOut(
            principal_fen=balance.principal_fen,
            bonus_fen=balance.bonus_fen,
            total_fen=balance.total_fen,
            lifetime_top_up_fen=balance.lifetime_top_up_fen,
        ),
        wallet_ledger=await _wallet(merchant, member_id, None, FIRST),
        credit=CreditSummaryOut(
            limit_fen=found.credit.limit_fen,
            owed_fen=found.credit.owed_fen,
            available_fen=found.credit.available_fen,
            overdue_fen=found.credit_overdue_fen,
        ),
        credit_ledger=await _credit(merchant, member_id, None, FIRST),
        coupons=await _coupons(merchant, member_id, None, FIRST),
        service_cards=[
            await card_out(merchant, v.card, last=v.last_uses, product=v.product) for v in found.service_cards
        ],
        mall_orders=await _orders(merchant, member_id, None, FIRST),
        purchases=await _purchases(merchant, member_id, None, FIRST),
        tags=[held.name for held in await tag_views.member_tags(merchant.id, member_id)],
        referrer=_member_ref(found.referrer) if found.referrer else None,
        referrals_count=found.referrals,
        referrals=await _referrals(merchant, member_id, None, FIRST),
        notices=NoticesOut(
            items=[delivery_out(d) for d in deliveries[:FIRST]],
            next_before=deliveries[FIRST - 1].id if len(deliveries) > FIRST else None,
        ),
        notes=await _notes(merchant, member_id, None, FIRST),
    )


def _collection(path: str, response: type[Out], loader: Loader, summary: str) -> None:
    """Declare `GET /api/admin/members/{member_id}/<path>`: one keyset page of that collection."""

    async def handler(call: Call[None, MemberPath]) -> Out:
        query: PageQuery = call.query
        return await loader(call.merchant, await _member_id(call), query.cursor, query.limit)

    handler.__name__ = path.replace("-", "_")
    handler.__doc__ = summary
    routes.get(
        f"/api/admin/members/{{member_id}}/{path}",
        path_model=MemberPath,
        query=PageQuery,
        response=response,
        auth=MANAGER,
    )(handler)


_collection("tier-history", TierHistoryOut, _tier_history, "The member's tier changes, newest first.")
_collection("points-ledger", LedgerOut, _ledger, "The member's points transactions, newest first.")
_collection(
    "points-lots", LotsOut, _lots, "The member's points lots (amount, remaining, expiry), newest first."
)
_collection(
    "wallet-ledger", WalletLedgerOut, _wallet, "The member's stored-value transactions, newest first."
)
_collection(
    "credit-ledger",
    CreditLedgerOut,
    _credit,
    "The member's credit entries (charges, repayments), newest first.",
)
_collection("coupons", CouponsOut, _coupons, "The member's coupons, newest first.")
_collection("mall-orders", OrdersOut, _orders, "The member's mall orders, newest first.")
_collection("purchases", PurchasesOut, _purchases, "The member's till purchases, newest first.")
_collection("referrals", ReferralsOut, _referrals, "The members this member referred, newest first.")
_collection("notes", NotesOut, _notes, "Staff notes about the member (联系记录), newest first.")
