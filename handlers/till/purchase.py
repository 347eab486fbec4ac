"""Purchases at the till: discount, coupon, points offset, stored value, points earned, tier change;
their refunds are `handlers.till.refund`.

One purchase is one database transaction holding the member's account lock (so the daily cap and
the points pool stay exact under concurrency): the `Purchase` row (unique idempotency key), the
coupon marked used, the offset debit, the stored-value payment and the earn credit (or pending
hold). Locks are always taken in the order points account → coupon → wallet. The tier review and
referral awards are the durable `purchase.completed` effect (`handlers.core.tasks`), queued in the
same transaction and run right after commit. A repeated idempotency key returns the first result
unchanged; the same key with a different request is refused (409).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core import queries
from handlers.core.errors import ErrorCode, IdempotencyMismatch, NotFound, ValidationError
from handlers.core.queries import fetch_one
from handlers.core.tasks import Effects
from handlers.coupons import redeem as coupons
from handlers.coupons.redeem import CouponQuote
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger, referrals, tiers
from handlers.notices.delivery import queue_notice
from handlers.rules import calendar
from handlers.rules.earn import compute_earn
from handlers.rules.earn_model import EarnResult, Item, MemberInfo, RuleSet
from handlers.rules.earn_model import Purchase as EarnPurchase
from handlers.rules.errors import RuleError
from handlers.rules.expiry import expiry_date
from handlers.rules.program import Program
from handlers.rules.tiers_model import Tier
from handlers.rules.till import Quote as TillQuote
from handlers.rules.till import after_tier_discount, price
from handlers.wallet import ledger as wallet
from models.member import Member
from models.merchant import Merchant
from models.points import PointsAccount, PointsKind, PointsPool
from models.purchase import Purchase, PurchaseStatus
from models.staff import Staff

log = logging.getLogger(__name__)
MAX_AMOUNT_FEN = 10**10  # 100 million yuan


@dataclass(frozen=True, slots=True)
class PurchaseRequest:
    idempotency_key: str
    member_id: int
    amount_fen: int
    items: tuple[Item, ...] = ()
    points_offset: int = 0
    coupon_code: str | None = None
    stored_value_fen: int = 0  # part of what is paid, taken from the member's stored value
    item_costs: Mapping[str, int | None] = field(default_factory=dict)  # unit cost by SKU (the catalogue's)


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    purchase_id: int
    member_id: int
    amount_fen: int
    discount_fen: int
    offset_points: int
    offset_fen: int
    paid_fen: int
    points_earned: int
    points_pending: bool
    rule_set_version: int
    breakdown: list[dict[str, Any]]
    balance: int
    tier_code: str
    tier_changed_to: str | None = None
    tier_gift_points: int = 0
    replayed: bool = False
    referral_awards: int = 0
    coupon_code: str | None = None
    coupon_fen: int = 0
    stored_value_fen: int = 0


def _digest(req: PurchaseRequest) -> str:
    body = {
        "member": req.member_id,
        "amount": req.amount_fen,
        "offset": req.points_offset,
        "items": [asdict(item) for item in req.items],
        "coupon": req.coupon_code,
        "stored_value": req.stored_value_fen,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def earn_key(purchase_key: str) -> str:
    return f"purchase:{purchase_key}:earn"


def wallet_key(purchase_key: str) -> str:
    return f"purchase:{purchase_key}:wallet"


def offset_key(purchase_key: str) -> str:
    return f"purchase:{purchase_key}:offset"


def effective_rules(rules: RuleSet, ladder: list[Tier], timezone: str) -> RuleSet:
    """The rule set as applied: the merchant's timezone, and tier multipliers from the tier benefits
    wherever the rule set names none for that tier (the rule set's own entry wins)."""
    from_tiers = {t.code: t.benefits.points_multiplier for t in ladder if t.benefits.points_multiplier != 1}
    return replace(rules, timezone=timezone, tier_multipliers={**from_tiers, **rules.tier_multipliers})


def _validate(req: PurchaseRequest) -> None:
    if not 1 <= len(req.idempotency_key) <= 100:
        raise ValidationError("idempotency_key 须为 1–100 个字符", field="idempotency_key")
    if not 0 < req.amount_fen <= MAX_AMOUNT_FEN:
        raise ValidationError(f"amount_fen 须在 1 到 {MAX_AMOUNT_FEN} 之间", field="amount_fen")
    if req.points_offset < 0:
        raise ValidationError("points_offset 不能为负数", field="points_offset")
    if req.stored_value_fen < 0:
        raise ValidationError("stored_value_fen 不能为负数", field="stored_value_fen")


async def _replay(purchase: Purchase, digest: str) -> PurchaseResult:
    if purchase.request_digest != digest:
        raise IdempotencyMismatch("幂等键 idempotency_key 已用于另一笔消费")
    if purchase.result is not None:
        return PurchaseResult(**{**purchase.result, "replayed": True})
    account = await PointsAccount.get_or_none(member_id=purchase.member_id)
    return PurchaseResult(
        purchase.id,
        purchase.member_id,
        purchase.amount_fen,
        purchase.discount_fen,
        purchase.offset_points,
        purchase.offset_fen,
        purchase.paid_fen,
        purchase.points_earned,
        purchase.points_pending,
        purchase.rule_set_version or 0,
        purchase.breakdown,
        account.balance if account else 0,
        purchase.tier_code,
        replayed=True,
    )


_PERIOD_SQL = """
SELECT
  (SELECT id FROM purchase WHERE merchant_id = :merchant AND idempotency_key = :key) AS existing,
  (SELECT COALESCE(SUM(paid_fen), 0) FROM purchase
    WHERE merchant_id = :merchant AND member_id = :member AND status = 'completed'
      AND created_at >= :year_start) AS spend,
  (SELECT COALESCE(SUM(points_earned), 0) FROM purchase
    WHERE merchant_id = :merchant AND member_id = :member AND status = 'completed'
      AND created_at >= :day_start) AS today
"""


async def _period(merchant: Merchant, member_id: int, key: str, now: datetime) -> tuple[int, int, int | None]:
    """Cash spend this calendar year and purchase points earned today, both merchant-local, and the id of
    a purchase already recorded under `key` (read under the account lock, in the same round trip)."""
    row = await fetch_one(
        _PERIOD_SQL,
        merchant=merchant.id,
        member=member_id,
        key=key,
        year_start=calendar.year_start(now, merchant.timezone),
        day_start=calendar.day_start(now, merchant.timezone),
    )
    return int(row["spend"]), int(row["today"]), row["existing"]


@dataclass(frozen=True, slots=True)
class _Till:
    """What a purchase is priced against, loaded once before any lock."""

    member: Member
    tier: Tier
    program: Program
    rules: RuleSet
    store_id: int | None
    store_code: str | None


@dataclass(frozen=True, slots=True)
class _Quote:
    price: TillQuote
    coupon: CouponQuote | None


async def record_purchase(
    merchant: Merchant, staff: Staff | None, req: PurchaseRequest, *, now: datetime, effects: Effects
) -> PurchaseResult:
    """Quote, then post in one transaction, then the after-commit effect (tier review, referral awards)
    runs at once, durably: if it fails, the purchase stands and the effect is retried."""
    _validate(req)
    digest = _digest(req)
    till = await _load(merchant, staff, req)
    async with in_transaction():
        account = await ledger.lock_account(merchant.id, till.member.id)
        period_spend, points_today, existing_id = await _period(
            merchant, till.member.id, req.idempotency_key, now
        )
        if existing_id is not None:  # the one check of the key, under the lock (a retry replays)
            return await _replay(await Purchase.get(id=existing_id), digest)
        quote = await _quote(merchant, till, req, now)
        purchase, result = await _post(
            merchant, staff, till, account, req, quote, digest, (period_spend, points_today), now=now
        )
        queued = await effects.queue(
            AFTER_PURCHASE,
            f"purchase:{purchase.id}",
            {
                "purchase_id": purchase.id,
                "merchant_id": merchant.id,
                "member_id": till.member.id,
                "referred": till.member.referrer_id is not None,
                "at": now.isoformat(),
            },
            merchant_id=merchant.id,
        )
        receipt = await queue_notice(
            effects,
            "purchase_receipt",
            merchant_id=merchant.id,
            member_id=till.member.id,
            event_key=f"purchase:{purchase.id}",
            context=_receipt(result, till),
        )
    [after] = await effects.after_commit(queued, *([receipt] if receipt else [])) or [None]
    return PurchaseResult(**{**after, "replayed": False}) if after else result


def _yuan(fen: int) -> str:
    return f"{fen / 100:.2f}"


def _receipt(result: PurchaseResult, till: _Till) -> dict[str, Any]:
    """What the member's receipt says (handlers.notices.catalog: purchase_receipt)."""
    return {
        "amount": _yuan(result.amount_fen),
        "discount": _yuan(result.discount_fen + result.coupon_fen),
        "coupon": result.coupon_code or "",
        "paid": _yuan(result.paid_fen),
        "stored_value": _yuan(result.stored_value_fen),
        "points": result.points_earned,
        "pending": result.points_pending,
        "balance": result.balance,
        "store": till.store_code or "",
    }


async def _load(merchant: Merchant, staff: Staff | None, req: PurchaseRequest) -> _Till:
    context = await _context(merchant, staff, req)
    if context["id"] is None or context["anonymized_at"] is not None:
        raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND)
    program = await loyalty_config.program(merchant.id)
    _, ladder = await loyalty_config.current_tiers(merchant.id)
    rules = effective_rules(await loyalty_config.current_rules(merchant.id), ladder, merchant.timezone)
    tier = loyalty_config.tier_by_code(ladder, context["ctx_tier_code"] or ladder[0].code)
    return _Till(
        queries.as_model(Member, context),
        tier,
        program,
        rules,
        context["ctx_store_id"],
        context["ctx_store_code"],
    )


async def _quote(merchant: Merchant, till: _Till, req: PurchaseRequest, now: datetime) -> _Quote:
    """Tier discount, then the coupon, then the points offset; refused with the reason, nothing written."""
    coupon = None
    try:
        if req.coupon_code:
            order_fen = after_tier_discount(req.amount_fen, till.tier.benefits.discount_percent)
            coupon = await coupons.quote(
                merchant,
                till.member.id,
                req.coupon_code,
                order_fen=order_fen,
                store_code=till.store_code,
                now=now,
            )
        quote = price(
            req.amount_fen,
            till.tier.benefits.discount_percent,
            req.points_offset,
            till.program.offset,
            coupon_fen=coupon.discount_fen if coupon else 0,
        )
    except RuleError as exc:
        raise ValidationError(exc.message, field=exc.field) from None
    if req.stored_value_fen > quote.paid_fen:
        raise ValidationError(
            f"储值支付不能超过应付金额 {quote.paid_fen / 100:.2f} 元", field="stored_value_fen"
        )
    return _Quote(quote, coupon)


async def _post(
    merchant: Merchant,
    staff: Staff | None,
    till: _Till,
    account: PointsAccount,
    req: PurchaseRequest,
    quoted: _Quote,
    digest: str,
    period: tuple[int, int],
    *,
    now: datetime,
) -> tuple[Purchase, PurchaseResult]:
    """Every write of the purchase, in the caller's transaction holding the account lock: the row, the
    coupon used, the offset debit, the stored-value payment, the earn (or pending hold), the pool."""
    quote, coupon, member, tier = quoted.price, quoted.coupon, till.member, till.tier
    period_spend, points_today = period
    pool = await _lock_pool(merchant.id, till.program)
    earn = compute_earn(
        EarnPurchase(quote.paid_fen, req.items, till.store_code or "", now),
        MemberInfo(tier.code, period_spend, points_today, tier.name),
        till.rules,
        pool_remaining=None if pool is None else pool.budget - pool.granted,
    )
    try:  # a unique violation aborts the transaction, which the error below rolls back
        purchase = await Purchase.create(
            merchant_id=merchant.id,
            member_id=member.id,
            store_id=till.store_id,
            staff=staff,
            idempotency_key=req.idempotency_key,
            request_digest=digest,
            amount_fen=quote.amount_fen,
            discount_fen=quote.discount_fen,
            offset_points=quote.offset_points,
            offset_fen=quote.offset_fen,
            paid_fen=quote.paid_fen,
            points_earned=earn.points,
            points_pending=bool(earn.points and till.program.pending_days),
            rule_set_version=earn.rule_set_version,
            breakdown=_lines(earn),
            items=_stored_items(req),
            tier_code=tier.code,
            period_spend_fen=period_spend,
            points_today_before=points_today,
            pool_code=pool.code if pool is not None and earn.points else None,
        )
    except IntegrityError:  # the unique-key backstop: the same key, for another member, committed first
        raise IdempotencyMismatch("幂等键 idempotency_key 已用于另一笔消费") from None
    actor = f"staff:{staff.id}" if staff else "system"
    if coupon is not None:
        await coupons.use(
            merchant,
            coupon.coupon_id,
            purchase_id=purchase.id,
            order_fen=quote.amount_fen - quote.discount_fen,
            store_code=till.store_code,
            now=now,
            actor=actor,
        )
    if quote.offset_points:
        await ledger.debit_locked(
            account,
            quote.offset_points,
            PointsKind.SPEND_OFFSET,
            key=offset_key(req.idempotency_key),
            now=now,
            reference=f"purchase:{purchase.id}",
            actor=actor,
            reason=f"消费抵扣 {quote.offset_fen / 100:.2f} 元",
        )
    if req.stored_value_fen:
        await wallet.pay(
            merchant,
            member.id,
            req.stored_value_fen,
            key=wallet_key(req.idempotency_key),
            now=now,
            reference=f"purchase:{purchase.id}",
            actor=actor,
        )
    await _earn(merchant, till.program, account, purchase, earn, now=now, actor=actor)
    if pool is not None and earn.points:
        pool.granted += earn.points
        await pool.save(update_fields=["granted"])
    result = PurchaseResult(
        purchase.id,
        member.id,
        quote.amount_fen,
        quote.discount_fen,
        quote.offset_points,
        quote.offset_fen,
        quote.paid_fen,
        earn.points,
        purchase.points_pending,
        earn.rule_set_version,
        purchase.breakdown,
        account.balance,
        tier.code,
        coupon_code=coupon.code if coupon else None,
        coupon_fen=quote.coupon_fen,
        stored_value_fen=req.stored_value_fen,
    )
    await _store_result(purchase, result)  # a retry from now on replays exactly this
    return purchase, result


def _stored_items(req: PurchaseRequest) -> list[dict[str, Any]]:
    """The items as stored: what the earn rules saw, and the unit cost then (for profit analyses)."""
    return [{**asdict(item), "unit_cost_fen": req.item_costs.get(item.sku)} for item in req.items]


def _stored(result: PurchaseResult) -> dict[str, Any]:
    return {k: v for k, v in asdict(result).items() if k != "replayed"}


async def _store_result(purchase: Purchase, result: PurchaseResult) -> None:
    purchase.result = _stored(result)
    await purchase.save(update_fields=["result"])


AFTER_PURCHASE = "purchase.completed"


async def after_purchase(
    effects: Effects, payload: Mapping[str, Any], now: datetime
) -> dict[str, Any] | None:
    """The `purchase.completed` effect: the tier review and first-purchase referral awards, then the
    stored result updated so a retry replays them; None when neither changed anything (most
    purchases: one query). Idempotent (tier change and award keys)."""
    merchant = await queries.first(Merchant, id=payload["merchant_id"])
    assert merchant is not None
    member_id, at = int(payload["member_id"]), datetime.fromisoformat(payload["at"])
    change = await tiers.evaluate(
        merchant, member_id, now=at, key=f"purchase:{payload['purchase_id']}", effects=effects
    )
    awards = await _first_purchase_referrals(merchant, member_id, at, effects) if payload["referred"] else 0
    if change is None and not awards:
        return None
    purchase = await Purchase.get(id=payload["purchase_id"])
    result = PurchaseResult(**{**(purchase.result or {}), "replayed": False})
    balance = (await PointsAccount.get(member_id=member_id)).balance
    result = replace(
        result,
        balance=balance,
        tier_code=change.to_code if change else result.tier_code,
        tier_changed_to=change.to_code if change else None,
        tier_gift_points=change.gift_points if change else 0,
        referral_awards=awards,
    )
    await _store_result(purchase, result)
    return _stored(result)


def _lines(earn: EarnResult) -> list[dict[str, Any]]:
    return [{"code": line.code, "label": line.label, "points": line.points} for line in earn.breakdown]


# What a purchase needs before it locks anything, in one round trip: the member (all columns; NULLs if
# there is none), their stored tier code, and the store: the cashier's, else the merchant's first open one.
_CONTEXT_SQL = """
SELECT m.*,
  (SELECT tier_code FROM member_tier WHERE member_id = :member) AS ctx_tier_code,
  s.id AS ctx_store_id, s.code AS ctx_store_code
FROM (SELECT 1 AS one) AS one
LEFT JOIN member m ON m.id = :member AND m.merchant_id = :merchant
LEFT JOIN store s ON s.id = COALESCE(
  :staff_store,
  (SELECT id FROM store WHERE merchant_id = :merchant AND closed_at IS NULL ORDER BY id LIMIT 1))
"""


async def _context(merchant: Merchant, staff: Staff | None, req: PurchaseRequest) -> dict[str, Any]:
    return await fetch_one(
        _CONTEXT_SQL,
        merchant=merchant.id,
        member=req.member_id,
        staff_store=staff.store_id if staff is not None else None,
    )


async def _lock_pool(merchant_id: int, program: Program) -> PointsPool | None:
    if program.earn_pool is None:
        return None
    return await PointsPool.select_for_update().get_or_none(merchant_id=merchant_id, code=program.earn_pool)


async def _earn(
    merchant: Merchant,
    program: Program,
    account: PointsAccount,
    purchase: Purchase,
    earn: EarnResult,
    *,
    now: datetime,
    actor: str,
) -> None:
    if not earn.points:
        return
    key = earn_key(purchase.idempotency_key)
    expires = expiry_date(now, program.expiry, merchant.timezone)
    if program.pending_days:
        await ledger.hold_pending(
            merchant.id,
            purchase.member_id,
            earn.points,
            key=key,
            now=now,
            available_at=now + timedelta(days=program.pending_days),
            expires_at=expires,
        )
        return
    await ledger.credit_locked(
        account,
        earn.points,
        PointsKind.EARN_PURCHASE,
        key=key,
        now=now,
        expires_at=expires,
        reference=f"purchase:{purchase.id}",
        actor=actor,
        reason=f"消费 {purchase.paid_fen / 100:.2f} 元",
    )


async def _first_purchase_referrals(
    merchant: Merchant, member_id: int, now: datetime, effects: Effects
) -> int:
    """Referral awards for a referred member's first completed purchase (once per level, by key)."""
    completed = await Purchase.filter(
        merchant_id=merchant.id, member_id=member_id, status=PurchaseStatus.COMPLETED
    ).count()
    if completed != 1:
        return 0
    return len(await referrals.award(merchant, member_id, trigger="first_purchase", now=now, effects=effects))
