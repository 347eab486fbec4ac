"""A till purchase priced against its context: tier discount, then the coupon, then the points offset
(the lots it draws, soonest-expiring first), the stored-value split (principal first) and the part put
on credit (within the limit as last read). Pure reads and rules: nothing is written, a refusal names its
field."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from handlers.core.errors import ValidationError
from handlers.coupons import redeem as coupons
from handlers.coupons.redeem import CouponQuote
from handlers.credit import ledger as credit
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger
from handlers.rules.errors import RuleError
from handlers.rules.expiry import InsufficientPoints, allocate_spend
from handlers.rules.program import Program
from handlers.rules.tiers_model import Tier
from handlers.rules.till import Quote as TillQuote
from handlers.rules.till import after_tier_discount, price
from handlers.rules.wallet import InsufficientBalance, split_payment
from handlers.till.context import TillContext
from handlers.wallet import ledger as wallet
from models.merchant import Merchant

if TYPE_CHECKING:
    from handlers.till.purchase import PurchaseRequest


@dataclass(frozen=True, slots=True)
class Quoted:
    price: TillQuote
    coupon: CouponQuote | None
    tier: Tier
    offset_plan: list[tuple[int, int]]
    wallet: tuple[int, int]  # (principal, bonus) taken from stored value


async def quote(
    merchant: Merchant,
    program: Program,
    ladder: list[Tier],
    context: TillContext,
    req: PurchaseRequest,
    now: datetime,
) -> Quoted:
    """Tier discount, then the coupon, then the points offset and the stored value; refused with the
    reason, nothing written."""
    tier = loyalty_config.tier_by_code(ladder, context.stored_tier or ladder[0].code)
    member_id = req.member_id
    coupon = None
    try:
        if req.coupon_code:
            order_fen = after_tier_discount(req.amount_fen, tier.benefits.discount_percent)
            coupon = await coupons.quote(
                merchant,
                member_id,
                req.coupon_code,
                order_fen=order_fen,
                store_code=context.store_code,
                now=now,
            )
        priced = price(
            req.amount_fen,
            tier.benefits.discount_percent,
            req.points_offset,
            program.offset,
            coupon_fen=coupon.discount_fen if coupon else 0,
        )
    except RuleError as exc:
        raise ValidationError(exc.message, field=exc.field) from None
    if req.stored_value_fen > priced.paid_fen:
        raise ValidationError(
            f"储值支付不能超过应付金额 {priced.paid_fen / 100:.2f} 元", field="stored_value_fen"
        )
    if req.stored_value_fen + req.credit_fen > priced.paid_fen:
        raise ValidationError(
            f"赊账与储值支付合计不能超过应付金额 {priced.paid_fen / 100:.2f} 元", field="credit_fen"
        )
    if req.credit_fen:
        limit, owed = context.credit or (0, 0)
        if owed + req.credit_fen > limit:  # the unlocked read; the writer checks again under the lock
            raise credit.CreditLimitExceeded(req.credit_fen, max(limit - owed, 0))
    plan: list[tuple[int, int]] = []
    if priced.offset_points:
        try:
            plan = allocate_spend(context.lots, priced.offset_points)
        except InsufficientPoints:
            available = max(context.balance or 0, 0)
            raise ledger.NotEnoughPoints(
                f"积分不足：需要 {priced.offset_points}，可用 {available}", field="points"
            ) from None
    split = (0, 0)
    if req.stored_value_fen:
        principal, bonus = context.wallet or (0, 0)
        try:
            taken = split_payment(principal, bonus, req.stored_value_fen)
        except InsufficientBalance as exc:
            needed, left = wallet.yuan(req.stored_value_fen), wallet.yuan(exc.available_fen)
            raise wallet.NotEnoughBalance(
                f"储值余额不足：需要 {needed} 元，可用 {left} 元",
                available_fen=exc.available_fen,
                field="amount_fen",
            ) from None
        split = (taken.principal_fen, taken.bonus_fen)
    return Quoted(priced, coupon, tier, plan, split)
