"""Refunds at the till: a purchase reversed exactly once.

Its pending points are voided or its earned points clawed back (a shortfall becomes a debt, see
`handlers.loyalty.ledger`), the points it offset come back, its coupon is restored unless it expired
meanwhile, what it paid from stored value returns as principal and bonus in the split it took, and
its credit charge is reversed (what the member already repaid of it comes back in cash,
`credit_cash_back_fen`). One transaction holding the purchase row's lock; a retried key replays the
first refund.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import Conflict, NotFound, ValidationError
from handlers.core.tasks import Effects
from handlers.coupons import redeem as coupons
from handlers.credit import ledger as credit
from handlers.loyalty import ledger
from handlers.notices.delivery import tell
from handlers.till.purchase import earn_key, offset_key, wallet_key
from handlers.wallet import ledger as wallet
from models.coupon import Coupon
from models.credit import CreditEntry
from models.merchant import Merchant
from models.points import PointsAccount, PointsPool, PointsTransaction
from models.purchase import Purchase, PurchaseStatus
from models.staff import Staff
from models.wallet import WalletTransaction


@dataclass(frozen=True, slots=True)
class RefundResult:
    purchase_id: int
    points_reversed: int
    points_voided: int
    offset_restored: int
    balance: int
    replayed: bool = False
    coupons_restored: int = 0
    stored_value_refunded_fen: int = 0
    credit_reversed_fen: int = 0  # taken off what the member owes
    credit_cash_back_fen: int = 0  # already repaid of the charge: give it back in cash


async def refund_purchase(
    merchant: Merchant, staff: Staff | None, purchase_id: int, *, key: str, now: datetime, effects: Effects
) -> RefundResult:
    """Reverse a purchase once: void its pending points or claw back its earned points (documented in
    handlers.loyalty.ledger: a shortfall becomes a debt), give back the points it offset, restore its coupon
    (unless it has expired meanwhile) and return what it paid from stored value, as principal and bonus
    in the split it took."""
    if not 1 <= len(key) <= 100:
        raise ValidationError("idempotency_key 须为 1–100 个字符", field="idempotency_key")
    actor = f"staff:{staff.id}" if staff else "system"
    async with in_transaction():
        purchase = await Purchase.select_for_update().get_or_none(id=purchase_id, merchant_id=merchant.id)
        if purchase is None:
            raise NotFound("没有这笔消费", field="purchase")
        if purchase.status == PurchaseStatus.REFUNDED:
            if purchase.refund_key == key:
                return await _refund_replay(purchase)
            when = purchase.refunded_at.isoformat() if purchase.refunded_at else ""
            raise Conflict(f"这笔消费已于 {when} 退款", field="purchase")
        voided = reversed_ = restored = 0
        if purchase.points_earned:
            if purchase.points_pending and await ledger.void_pending(
                merchant.id, purchase.member_id, earn_key(purchase.idempotency_key)
            ):
                voided = purchase.points_earned
            else:
                await ledger.reverse(
                    merchant.id,
                    earn_key(purchase.idempotency_key),
                    key=f"refund:{purchase.id}:earn",
                    now=now,
                    actor=actor,
                    reason="消费退款，扣回积分",
                )
                reversed_ = purchase.points_earned
            await _return_to_pool(merchant.id, purchase.pool_code, purchase.points_earned)
        if purchase.offset_points:
            await ledger.reverse(
                merchant.id,
                offset_key(purchase.idempotency_key),
                key=f"refund:{purchase.id}:offset",
                now=now,
                actor=actor,
                reason="消费退款，退还抵扣积分",
            )
            restored = purchase.offset_points
        coupons_back = await coupons.restore(merchant, purchase.id, now=now, actor=actor)
        stored_value = await _refund_stored_value(merchant, purchase, now=now, actor=actor)
        reversal = await credit.reverse_charge(
            merchant.id,
            purchase.idempotency_key,
            key=_credit_key(purchase),
            now=now,
            actor=actor,
            staff_id=staff.id if staff else None,
        )
        purchase.status, purchase.refunded_at, purchase.refund_key = PurchaseStatus.REFUNDED, now, key
        purchase.refunded_by = staff
        await purchase.save(update_fields=["status", "refunded_at", "refund_key", "refunded_by_id"])
        await audit_log.record(
            merchant.id,
            actor,
            "purchase.refund",
            f"purchase:{purchase.id}",
            points_reversed=reversed_,
            points_voided=voided,
            offset_restored=restored,
            coupons_restored=coupons_back,
            stored_value_refunded_fen=stored_value,
            credit_reversed_fen=reversal.reversed_fen if reversal else 0,
            credit_cash_back_fen=reversal.cash_back_fen if reversal else 0,
        )
    account = await PointsAccount.get(member_id=purchase.member_id)
    if reversed_:
        await tell(
            effects,
            "points_debited",
            merchant_id=merchant.id,
            member_id=purchase.member_id,
            event_key=f"refund:{purchase.id}",
            context={"reason": "消费退款，扣回积分", "points": reversed_, "balance": account.balance},
        )
    return RefundResult(
        purchase.id,
        reversed_,
        voided,
        restored,
        account.balance,
        coupons_restored=coupons_back,
        stored_value_refunded_fen=stored_value,
        credit_reversed_fen=reversal.reversed_fen if reversal else 0,
        credit_cash_back_fen=reversal.cash_back_fen if reversal else 0,
    )


def _credit_key(purchase: Purchase) -> str:
    return f"refund:{purchase.id}:credit"


async def _wallet_payment(purchase: Purchase) -> WalletTransaction | None:
    return await WalletTransaction.get_or_none(
        merchant_id=purchase.merchant_id, idempotency_key=wallet_key(purchase.idempotency_key)
    )


async def _refund_stored_value(merchant: Merchant, purchase: Purchase, *, now: datetime, actor: str) -> int:
    payment = await _wallet_payment(purchase)
    if payment is None:
        return 0
    await wallet.refund_payment(
        merchant, payment.idempotency_key, key=f"refund:{purchase.id}:wallet", now=now, actor=actor
    )
    return -int(payment.principal_delta + payment.bonus_delta)


async def _return_to_pool(merchant_id: int, pool_code: str | None, amount: int) -> None:
    """Give refunded points back to the pool they were drawn from (if any)."""
    if pool_code is None:
        return
    pool = await PointsPool.select_for_update().get_or_none(merchant_id=merchant_id, code=pool_code)
    if pool is not None:
        pool.granted = max(pool.granted - amount, 0)
        await pool.save(update_fields=["granted"])


async def _refund_replay(purchase: Purchase) -> RefundResult:
    pending = purchase.points_pending and not await _earn_posted(purchase)
    account = await PointsAccount.get(member_id=purchase.member_id)
    payment = await _wallet_payment(purchase)
    restored = (
        await Coupon.filter(
            merchant_id=purchase.merchant_id,
            events__kind="restored",
            events__reference=f"purchase:{purchase.id}",
        )
        .distinct()
        .count()
    )
    return RefundResult(
        purchase.id,
        0 if pending else purchase.points_earned,
        purchase.points_earned if pending else 0,
        purchase.offset_points,
        account.balance,
        replayed=True,
        coupons_restored=restored,
        stored_value_refunded_fen=-(payment.principal_delta + payment.bonus_delta) if payment else 0,
        **await _credit_replay(purchase),
    )


async def _credit_replay(purchase: Purchase) -> dict[str, int]:
    reversal = await CreditEntry.get_or_none(
        merchant_id=purchase.merchant_id, idempotency_key=_credit_key(purchase)
    )
    if reversal is None or reversal.reverses_id is None:
        return {}
    charge = await CreditEntry.get(id=reversal.reverses_id)
    return {
        "credit_reversed_fen": -reversal.amount_fen,
        "credit_cash_back_fen": charge.amount_fen + reversal.amount_fen,
    }


async def _earn_posted(purchase: Purchase) -> bool:
    return await PointsTransaction.exists(
        merchant_id=purchase.merchant_id, idempotency_key=earn_key(purchase.idempotency_key)
    )
