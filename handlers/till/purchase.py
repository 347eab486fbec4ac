"""Purchases at the till: discount, coupon, points offset, stored value, credit (赊账), points earned,
tier change; their refunds are `handlers.till.refund`.

A purchase reads its context once, unlocked (`handlers.till.context`), prices it and computes its points
here (the rules stay in Python), then makes ONE call of `memberbot_till_purchase` (migration 0017):
under the member's account lock it re-checks what the rules assumed and writes the `Purchase` row
(unique idempotency key) with its stored result, the coupon marked used, the offset debit, the
stored-value payment, the credit charge (never above the limit: migration 0019), the earn credit (or
pending hold), the pool, the receipt notice — all through the ledgers' one-writer functions. If a
concurrent change moved the context, the purchase is computed again in a transaction that takes the
locks first (points account → pool → coupon → wallet → credit), so the daily cap and the points pool
stay exact under concurrency. The tier review and referral awards are the durable `purchase.completed`
effect (`handlers.core.tasks`), queued by the same call when a tier threshold is reached or a referred
member makes a first purchase, and run right after commit. A repeated idempotency key returns the first
result unchanged; the same key with a different request is refused (409).
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
from handlers.core.errors import Conflict, ErrorCode, IdempotencyMismatch, NotFound, ValidationError
from handlers.core.tasks import LEASE, Effects, Queued
from handlers.coupons.issue import CouponCode, CouponError
from handlers.credit import ledger as credit
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import referrals, tiers
from handlers.members import lookup as members
from handlers.notices.delivery import NOTICE_SEND
from handlers.rules.earn import compute_earn
from handlers.rules.earn_model import EarnResult, Item, MemberInfo, RuleSet
from handlers.rules.earn_model import Purchase as EarnPurchase
from handlers.rules.expiry import expiry_date
from handlers.rules.program import Program
from handlers.rules.tiers import upgrade_thresholds, window_days
from handlers.rules.tiers_model import Tier
from handlers.till import context as till
from handlers.till import pricing
from handlers.wallet import ledger as wallet
from models.merchant import Merchant
from models.points import PointsAccount
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
    credit_fen: int = 0  # part of what is paid, put on the member's credit (赊账)


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
    credit_fen: int = 0


def _digest(req: PurchaseRequest) -> str:
    body = {
        "member": req.member_id,
        "amount": req.amount_fen,
        "offset": req.points_offset,
        "items": [asdict(item) for item in req.items],
        "coupon": req.coupon_code,
        "stored_value": req.stored_value_fen,
    }
    if req.credit_fen:  # only then: the digests of purchases without credit stay what they were
        body["credit"] = req.credit_fen
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
    if req.credit_fen < 0:
        raise ValidationError("credit_fen 不能为负数", field="credit_fen")


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


async def _replay_existing(existing: till.Existing, digest: str) -> PurchaseResult:
    """A key already used: its stored result (read with the context), or the row's."""
    if existing.digest != digest:
        raise IdempotencyMismatch("幂等键 idempotency_key 已用于另一笔消费")
    if existing.result is not None:
        return PurchaseResult(**{**existing.result, "replayed": True})
    return await _replay(await Purchase.get(id=existing.purchase_id), digest)


class _Stale(Exception):
    """The context a purchase was computed from moved before it could be written: compute again."""


@dataclass(frozen=True, slots=True)
class _Config:
    program: Program
    tiers_version: int
    ladder: list[Tier]
    rules: RuleSet


async def record_purchase(
    merchant: Merchant, staff: Staff | None, req: PurchaseRequest, *, now: datetime, effects: Effects
) -> PurchaseResult:
    """Price and post the purchase, then run the after-commit effect (tier review, referral awards) at
    once, durably: if it fails, the purchase stands and the effect is retried.

    Optimistic: one unlocked read (`handlers.till.context`), the rules in Python, then ONE call of
    `memberbot_till_purchase`, which locks, re-checks what the rules assumed and writes it all. When a
    concurrent change moved that context, the purchase is computed again under the locks."""
    _validate(req)
    digest = _digest(req)
    config = await _config(merchant)
    needs = till.Needs(
        req.member_id,
        req.idempotency_key,
        config.program.earn_pool,
        req.points_offset > 0,
        req.stored_value_fen > 0,
        members.normalise_code(req.coupon_code)[:16] if req.coupon_code else None,
        credit=req.credit_fen > 0,
    )
    try:
        done: PurchaseResult = await _attempt(
            merchant, staff, req, digest, config, needs, now=now, effects=effects
        )
        return done
    except _Stale:
        pass
    try:
        async with in_transaction():
            await till.lock(merchant, needs)
            posted = await _attempt(
                merchant, staff, req, digest, config, needs, now=now, effects=effects, locked=True
            )
    except _Stale:  # only a manager's change of this very coupon or balance at this very moment
        raise Conflict("会员信息刚刚发生变化，请重试", field="idempotency_key") from None
    return await _after(posted, effects)


async def _config(merchant: Merchant) -> _Config:
    program = await loyalty_config.program(merchant.id)
    version, ladder = await loyalty_config.current_tiers(merchant.id)
    rules = effective_rules(await loyalty_config.current_rules(merchant.id), ladder, merchant.timezone)
    return _Config(program, version, ladder, rules)


@dataclass(frozen=True, slots=True)
class _Posted:
    result: PurchaseResult
    queued: tuple[Queued, ...] = ()


async def _attempt(
    merchant: Merchant,
    staff: Staff | None,
    req: PurchaseRequest,
    digest: str,
    config: _Config,
    needs: till.Needs,
    *,
    now: datetime,
    effects: Effects,
    locked: bool = False,
) -> Any:
    """Read, compute, post. Unlocked: the finished `PurchaseResult`; under the caller's locks: a
    `_Posted` whose effects the caller runs after its commit. `_Stale` when the context moved."""
    context = await till.read(merchant, staff, needs, now)
    if context.existing is not None:  # a retry replays (checked again under the lock by the function)
        replayed = await _replay_existing(context.existing, digest)
        return _Posted(replayed) if locked else replayed
    refused = till.member_refusal(context.member)
    if refused is not None:
        raise refused
    if _outdated(config, context):
        loyalty_config.clear_cache(merchant.id)  # saved by a process that could not announce it
        config = await _config(merchant)
    quoted = await pricing.quote(merchant, config.program, config.ladder, context, req, now)
    call = _call(merchant, staff, config, context, req, quoted, digest, now=now, effects=effects)
    try:
        rows = await queries.fetch_rows(_PURCHASE_SQL, p=json.dumps(call, ensure_ascii=False, default=str))
    except IntegrityError:  # the unique-key backstop: the same key, for another member, committed first
        raise IdempotencyMismatch("幂等键 idempotency_key 已用于另一笔消费") from None
    row = rows[0]
    outcome = row["outcome"]
    if outcome == "stale":
        raise _Stale
    if outcome == "no_member":
        raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND)
    if outcome == "coupon_used":
        raise CouponError(CouponCode.USED, "该券已使用", field="code")
    if outcome == "credit_over_limit":  # what the unlocked read allowed was taken meanwhile
        account = await credit.balance(merchant.id, req.member_id)
        raise credit.CreditLimitExceeded(req.credit_fen, account.available_fen)
    if outcome == "replay":
        replayed = await _replay(await Purchase.get(id=row["purchase_id"]), digest)
        return _Posted(replayed) if locked else replayed
    stored = json.loads(row["result"]) if isinstance(row["result"], str) else row["result"]
    result = PurchaseResult(**{**stored, "replayed": False})
    queued = []
    if row["after_task"] is not None:
        payload = {**call["after_payload"], "purchase_id": result.purchase_id}
        queued.append(Queued(int(row["after_task"]), AFTER_PURCHASE, payload, claimed=True))
    if row["notice_task"] is not None:
        queued.append(Queued(int(row["notice_task"]), NOTICE_SEND))
    posted = _Posted(result, tuple(queued))
    return posted if locked else await _after(posted, effects)


def _outdated(config: _Config, context: till.TillContext) -> bool:
    """The cached rule set or ladder is not the database's current one."""
    rules_moved = context.rules_version is not None and context.rules_version != config.rules.version
    return rules_moved or (
        context.tiers_version is not None and context.tiers_version != config.tiers_version
    )


async def _after(posted: _Posted, effects: Effects) -> PurchaseResult:
    """After commit: the inline after-purchase effect (its result replaces the response), the receipt."""
    if not posted.queued:
        return posted.result
    after = await effects.after_commit(*posted.queued)
    runs_inline = posted.queued[0].kind == AFTER_PURCHASE
    if runs_inline and after and after[0]:
        return PurchaseResult(**{**after[0], "replayed": False})
    return posted.result


def _yuan(fen: int) -> str:
    return f"{fen / 100:.2f}"


def _receipt(result: PurchaseResult, store_code: str | None) -> dict[str, Any]:
    """What the member's receipt says (handlers.notices.catalog: purchase_receipt)."""
    return {
        "amount": _yuan(result.amount_fen),
        "discount": _yuan(result.discount_fen + result.coupon_fen),
        "coupon": result.coupon_code or "",
        "paid": _yuan(result.paid_fen),
        "stored_value": _yuan(result.stored_value_fen),
        "credit": _yuan(result.credit_fen),
        "points": result.points_earned,
        "pending": result.points_pending,
        "balance": result.balance,
        "store": store_code or "",
    }


def _call(
    merchant: Merchant,
    staff: Staff | None,
    config: _Config,
    context: till.TillContext,
    req: PurchaseRequest,
    quoted: pricing.Quoted,
    digest: str,
    *,
    now: datetime,
    effects: Effects,
) -> dict[str, Any]:
    """The argument of `memberbot_till_purchase`: every write, and what it assumed."""
    quote, coupon, tier, program = quoted.price, quoted.coupon, quoted.tier, config.program
    pool = context.pool_remaining if program.earn_pool is not None else None
    earn = compute_earn(
        EarnPurchase(quote.paid_fen, req.items, context.store_code or "", now),
        MemberInfo(tier.code, context.period_spend_fen, context.points_today, tier.name),
        config.rules,
        pool_remaining=pool,
    )
    pending = bool(earn.points and program.pending_days)
    result = PurchaseResult(
        0,
        req.member_id,
        quote.amount_fen,
        quote.discount_fen,
        quote.offset_points,
        quote.offset_fen,
        quote.paid_fen,
        earn.points,
        pending,
        earn.rule_set_version,
        _lines(earn),
        0,
        tier.code,
        coupon_code=coupon.code if coupon else None,
        coupon_fen=quote.coupon_fen,
        stored_value_fen=req.stored_value_fen,
        credit_fen=req.credit_fen,
    )
    stored = {k: v for k, v in _stored(result).items() if k not in ("purchase_id", "balance")}
    receipt = {k: v for k, v in _receipt(result, context.store_code).items() if k != "balance"}
    spend_to_reach, earned_to_reach = upgrade_thresholds(config.ladder, tier.code)
    rules = config.rules
    queued_at = effects.clock()
    call: dict[str, Any] = {
        "merchant_id": merchant.id,
        "member_id": req.member_id,
        "idempotency_key": req.idempotency_key,
        "request_digest": digest,
        "now": now.isoformat(),
        "actor": f"staff:{staff.id}" if staff else "system",
        "store_id": context.store_id,
        "staff_id": staff.id if staff else None,
        "amount_fen": quote.amount_fen,
        "discount_fen": quote.discount_fen,
        "offset_points": quote.offset_points,
        "offset_fen": quote.offset_fen,
        "paid_fen": quote.paid_fen,
        "points_earned": earn.points,
        "points_pending": pending,
        "rule_set_version": earn.rule_set_version,
        "tier_code": tier.code,
        "breakdown": result.breakdown,
        "items": _stored_items(req),
        "result": stored,
        "receipt": receipt,
        # What the rules assumed, re-checked under the lock.
        "stored_tier": context.stored_tier,
        "year_start": context.year_start.isoformat(),
        "day_start": context.day_start.isoformat(),
        "period_matters": rules.daily_cap is not None
        or (bool(rules.bands) and rules.band_mode != "per_purchase"),
        "period_spend": context.period_spend_fen,
        "points_today": context.points_today,
        "account_balance": context.balance,
        "account_updated_at": context.account_updated_at.isoformat() if context.account_updated_at else None,
        "pool_code": program.earn_pool if pool is not None else None,
        "pool_remaining": pool,
        "pool_capped": any(line.code == "cap:pool" for line in earn.breakdown),
        "coupon_id": coupon.coupon_id if coupon else None,
        "coupon_fen": quote.coupon_fen,
        "wallet_principal": quoted.wallet[0],
        "wallet_bonus": quoted.wallet[1],
        "wallet_seen_principal": context.wallet[0] if context.wallet else 0,
        "wallet_seen_bonus": context.wallet[1] if context.wallet else 0,
        "credit_fen": req.credit_fen,
        # The postings.
        "earn_key": earn_key(req.idempotency_key),
        "offset_key": offset_key(req.idempotency_key),
        "wallet_key": wallet_key(req.idempotency_key),
        "offset_lots": [lot for lot, _ in quoted.offset_plan],
        "offset_takes": [take for _, take in quoted.offset_plan],
        "offset_reason": f"消费抵扣 {quote.offset_fen / 100:.2f} 元",
        "wallet_reason": f"储值消费 {wallet.yuan(req.stored_value_fen)} 元",
        "credit_key": credit.charge_key(req.idempotency_key),
        "credit_reason": f"赊账消费 {credit.yuan(req.credit_fen)} 元",
        "credit_due_at": (now + timedelta(days=merchant.credit_overdue_days)).isoformat(),
        "earn_reason": f"消费 {quote.paid_fen / 100:.2f} 元",
        "expires_at": _isoformat(expiry_date(now, program.expiry, merchant.timezone)),
        "available_at": (now + timedelta(days=program.pending_days)).isoformat(),
        # The after-purchase effect, when it can matter.
        "referred": context.member is not None and context.member.referrer_id is not None,
        "spend_to_reach": spend_to_reach,
        "earned_to_reach": earned_to_reach,
        "window_since": (now - timedelta(days=window_days(config.ladder))).isoformat(),
        "after_payload": {
            "merchant_id": merchant.id,
            "member_id": req.member_id,
            "referred": context.member is not None and context.member.referrer_id is not None,
            "at": now.isoformat(),
        },
        "queued_at": queued_at.isoformat(),
        "lease_until": (queued_at + LEASE).isoformat(),
    }
    return call


def _isoformat(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


_PURCHASE_SQL = """
SELECT outcome, purchase_id, balance, result, after_task, notice_task FROM memberbot_till_purchase(:p::jsonb)
"""


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
