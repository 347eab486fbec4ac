"""Coupons after issuance: the till-side quote/use/restore, revocation, expiry, listings, gift hooks.

States: issued → used (at the till) / expired (the job, or past `valid_until`) / revoked (a manager).
A refund restores a used coupon to issued (or expired, if its window has passed). Every change writes
one append-only CouponEvent (`issued`, `used`, `restored`, `expired`, `revoked`).

Till-side functions (the purchase flow calls them; signatures are part of the contract):

- `quote(merchant, member_id, code, *, order_fen, store_code, now) -> CouponQuote` — read-only: does
  the member's coupon apply to this order, and what does it take off? Raises CouponError with code
  `coupon_not_found` (unknown code, another member's or merchant's), `coupon_used`, `coupon_expired`
  (past `valid_until` even before the expiry job ran) or `coupon_not_applicable` (revoked, not yet
  valid, store not allowed, below the threshold — the Chinese reason is the message, e.g.
  "满 100.00 元可用").
- `use(merchant, coupon_id, *, purchase_id, order_fen, store_code, now, actor) -> int` — inside the
  purchase transaction, after the Purchase row exists (the coupon references it): locks the coupon row,
  re-checks everything, marks it used and returns the discount in fen. At most once: a concurrent scan
  gets `coupon_used`; calling it again for the same purchase returns the same discount.
- `restore(merchant, purchase_id, *, now, actor) -> int` — inside the refund transaction: the coupons
  that purchase used go back to issued (expired if their window has passed); returns how many.
  Idempotent: a second call finds nothing to restore and returns 0.

Issuance lives in `handlers.coupons.issue` (`issue` is re-exported here for the mall and other sources).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import DomainError, ValidationError
from handlers.coupons import issue as coupon_issue
from handlers.coupons.issue import CouponCode, CouponError, describe, issue, issue_once, terms_of
from handlers.loyalty import config as loyalty_config
from handlers.members import lookup as members
from handlers.rules import coupons as rules
from handlers.rules.tiers_model import Tier
from models.coupon import Coupon, CouponEvent, CouponStatus, CouponTemplate
from models.member import Member
from models.merchant import Merchant
from models.purchase import Purchase
from models.staff import Staff

__all__ = [
    "CouponCode",
    "CouponError",
    "CouponQuote",
    "CouponView",
    "admin_coupons",
    "by_code",
    "describe",
    "expire_coupons",
    "expiry_job",
    "issue",
    "issue_manually",
    "member_coupons",
    "new_member_gift",
    "quote",
    "restore",
    "revoke",
    "tier_gift",
    "use",
    "view",
]

log = logging.getLogger(__name__)
EXPIRY_BATCH = 500
MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class CouponQuote:
    coupon_id: int
    code: str
    kind: str
    discount_fen: int
    gift_name: str


# Till ---------------------------------------------------------------------------------------------


def _window(coupon: Coupon, template: CouponTemplate) -> rules.Window:
    return rules.Window(coupon.valid_from, coupon.valid_until, coupon_issue.stores_of(template))


def _check(
    merchant: Merchant,
    coupon: Coupon,
    template: CouponTemplate,
    *,
    order_fen: int,
    store_code: str | None,
    now: datetime,
) -> int:
    """The discount this coupon gives on this order now, or the CouponError saying why not."""
    if coupon.status == CouponStatus.USED:
        raise CouponError(CouponCode.USED, "该券已使用", field="code")
    if coupon.status == CouponStatus.EXPIRED:
        raise CouponError(CouponCode.EXPIRED, "优惠券已过期", field="code")
    if coupon.status == CouponStatus.REVOKED:
        raise CouponError(CouponCode.NOT_APPLICABLE, "该券已作废", field="code")
    terms = terms_of(template)
    refused = rules.refusal(
        terms,
        _window(coupon, template),
        order_fen=order_fen,
        store_code=store_code,
        now=now,
        timezone=merchant.timezone,
    )
    if refused is not None:
        code = CouponCode.EXPIRED if refused.code == "expired" else CouponCode.NOT_APPLICABLE
        raise CouponError(code, refused.reason, field="code")
    return rules.discount(terms, order_fen)


def _not_found() -> CouponError:
    return CouponError(CouponCode.NOT_FOUND, "优惠券不存在", field="code")


async def quote(
    merchant: Merchant, member_id: int, code: str, *, order_fen: int, store_code: str | None, now: datetime
) -> CouponQuote:
    """Read-only: the member's coupon `code` applied to an order of `order_fen` at `store_code`."""
    coupon = await Coupon.get_or_none(merchant_id=merchant.id, code=members.normalise_code(code)[:16])
    if coupon is None or coupon.member_id != member_id:
        raise _not_found()
    template = await CouponTemplate.get(id=coupon.template_id)
    discount = _check(merchant, coupon, template, order_fen=order_fen, store_code=store_code, now=now)
    return CouponQuote(coupon.id, coupon.code, terms_of(template).kind, discount, template.gift_name)


async def use(
    merchant: Merchant,
    coupon_id: int,
    *,
    purchase_id: int,
    order_fen: int,
    store_code: str | None,
    now: datetime,
    actor: str,
) -> int:
    """Mark the coupon used by the purchase (row locked, everything re-checked); the discount in fen."""
    async with in_transaction():
        coupon = await Coupon.select_for_update().get_or_none(id=coupon_id, merchant_id=merchant.id)
        purchase = await Purchase.get_or_none(id=purchase_id, merchant_id=merchant.id)
        if coupon is None or purchase is None or purchase.member_id != coupon.member_id:
            raise _not_found()
        if coupon.status == CouponStatus.USED and coupon.used_purchase_id == purchase_id:
            return coupon.discount_fen
        template = await CouponTemplate.get(id=coupon.template_id)
        discount = _check(merchant, coupon, template, order_fen=order_fen, store_code=store_code, now=now)
        coupon.status, coupon.used_at, coupon.used_purchase_id = CouponStatus.USED, now, purchase_id
        coupon.discount_fen = discount
        await coupon.save(update_fields=["status", "used_at", "used_purchase_id", "discount_fen"])
        await _event(coupon, "used", actor, f"purchase:{purchase_id}")
    return discount


async def restore(merchant: Merchant, purchase_id: int, *, now: datetime, actor: str) -> int:
    """Give back the coupons a refunded purchase used; how many were restored (0 on a repeat)."""
    async with in_transaction():
        used = (
            await Coupon.select_for_update()
            .filter(merchant_id=merchant.id, used_purchase_id=purchase_id, status=CouponStatus.USED)
            .order_by("id")
        )
        for coupon in used:
            lapsed = coupon.valid_until <= now
            coupon.status = CouponStatus.EXPIRED if lapsed else CouponStatus.ISSUED
            coupon.used_at, coupon.used_purchase_id, coupon.discount_fen = None, None, 0
            await coupon.save(update_fields=["status", "used_at", "used_purchase_id", "discount_fen"])
            await _event(coupon, "restored", actor, f"purchase:{purchase_id}")
            if lapsed:
                await _event(coupon, "expired", actor, "restored after expiry")
    return len(used)


async def _event(coupon: Coupon, kind: str, actor: str, reference: str = "") -> None:
    await CouponEvent.create(
        merchant_id=coupon.merchant_id,
        coupon_id=coupon.id,
        kind=kind,
        actor=actor[:32],
        reference=reference[:64],
    )


# Listings -----------------------------------------------------------------------------------------

State = Literal["usable", "upcoming", "used", "expired", "revoked"]
STATES: tuple[State, ...] = ("usable", "upcoming", "used", "expired", "revoked")  # the order shown
_STORED: dict[str, State] = {"used": "used", "expired": "expired", "revoked": "revoked"}


@dataclass(frozen=True, slots=True)
class CouponView:
    coupon: Coupon
    template: CouponTemplate
    state: State  # a past-due issued coupon is already "expired"
    description: str  # 满100减20, 8折（最高减50元）, 赠咖啡一杯


def state_of(coupon: Coupon, now: datetime) -> State:
    if coupon.status != CouponStatus.ISSUED:
        return _STORED[str(CouponStatus(coupon.status).value)]
    if coupon.valid_until <= now:
        return "expired"
    return "upcoming" if coupon.valid_from > now else "usable"


def _state_filter(state: State, now: datetime) -> Q:
    issued = Q(status=CouponStatus.ISSUED)
    return {
        "usable": issued & Q(valid_from__lte=now, valid_until__gt=now),
        "upcoming": issued & Q(valid_from__gt=now),
        "used": Q(status=CouponStatus.USED),
        "expired": Q(status=CouponStatus.EXPIRED) | (issued & Q(valid_until__lte=now)),
        "revoked": Q(status=CouponStatus.REVOKED),
    }[state]


async def _views(rows: list[Coupon], now: datetime) -> list[CouponView]:
    templates = {t.id: t for t in await CouponTemplate.filter(id__in={c.template_id for c in rows})}
    return [
        CouponView(c, templates[c.template_id], state_of(c, now), describe(templates[c.template_id]))
        for c in rows
    ]


async def view(coupon: Coupon, now: datetime) -> CouponView:
    return (await _views([coupon], now))[0]


async def member_coupons(
    merchant: Merchant, member_id: int, *, state: State | None, now: datetime, limit: int = 100
) -> list[CouponView]:
    """The member's coupons (newest `limit`), usable first, each group soonest-expiring first."""
    rows = Coupon.filter(merchant_id=merchant.id, member_id=member_id)
    if state is not None:
        rows = rows.filter(_state_filter(state, now))
    views = await _views(await rows.order_by("-id").limit(limit), now)
    return sorted(views, key=lambda v: (STATES.index(v.state), v.coupon.valid_until, v.coupon.id))


async def admin_coupons(
    merchant: Merchant,
    *,
    template_id: int | None,
    status: CouponStatus | None,
    member_id: int | None,
    cursor: int | None,
    limit: int,
    now: datetime,
) -> list[CouponView]:
    """Newest first, `limit` rows with id below `cursor`; `status` is the stored status."""
    rows = Coupon.filter(merchant_id=merchant.id)
    if template_id is not None:
        rows = rows.filter(template_id=template_id)
    if status is not None:
        rows = rows.filter(status=status)
    if member_id is not None:
        rows = rows.filter(member_id=member_id)
    if cursor is not None:
        rows = rows.filter(id__lt=cursor)
    return await _views(await rows.order_by("-id").limit(limit), now)


# Managers -----------------------------------------------------------------------------------------


async def by_code(merchant: Merchant, code: str) -> Coupon:
    coupon = await Coupon.get_or_none(merchant_id=merchant.id, code=members.normalise_code(code)[:16])
    if coupon is None:
        raise _not_found()
    return coupon


async def revoke(
    merchant: Merchant,
    coupon_id: int,
    *,
    reason: str,
    staff: Staff,
    now: datetime,
    member_id: int | None = None,
) -> Coupon:
    """Void an issued coupon (a manager, with a reason, audit-logged); revoking twice changes nothing.
    With `member_id`, a coupon held by another member is not found."""
    reason = reason.strip()
    if not 1 <= len(reason) <= MAX_REASON:
        raise ValidationError(f"reason: 请填写 1–{MAX_REASON} 个字的原因", field="reason")
    actor = f"staff:{staff.id}"
    async with in_transaction():
        coupon = await Coupon.select_for_update().get_or_none(id=coupon_id, merchant_id=merchant.id)
        if coupon is None or member_id not in (None, coupon.member_id):
            raise _not_found()
        if coupon.status == CouponStatus.REVOKED:
            return coupon
        if coupon.status == CouponStatus.USED:
            raise CouponError(CouponCode.USED, "已使用的券不能作废（请先退款）", field="coupon_id")
        if coupon.status == CouponStatus.EXPIRED:
            raise CouponError(CouponCode.EXPIRED, "已过期的券无需作废", field="coupon_id")
        coupon.status = CouponStatus.REVOKED
        await coupon.save(update_fields=["status"])
        await _event(coupon, "revoked", actor, reason)
        await audit_log.record(
            merchant.id,
            actor,
            "coupon.revoke",
            f"coupon:{coupon.code}",
            coupon_id=coupon.id,
            member_id=coupon.member_id,
            reason=reason,
        )
    return coupon


async def issue_manually(
    merchant: Merchant,
    member_code: str,
    template_id: int,
    *,
    idempotency_key: str,
    reason: str,
    staff: Staff,
    now: datetime,
) -> tuple[Coupon, bool]:
    """A manager gives a member a coupon, with a reason and an audit row (in the same transaction)."""
    reason = reason.strip()
    if not 1 <= len(reason) <= MAX_REASON:
        raise ValidationError(f"reason: 请填写 1–{MAX_REASON} 个字的原因", field="reason")
    member = await members.resolve(merchant, code=member_code)
    actor = f"staff:{staff.id}"
    async with in_transaction():
        coupon, created = await issue_once(
            merchant,
            member.id,
            template_id,
            source="manual",
            key=f"manual:{idempotency_key}",
            now=now,
            actor=actor,
        )
        if created:
            await audit_log.record(
                merchant.id,
                actor,
                "coupon.issue",
                f"coupon:{coupon.code}",
                coupon_id=coupon.id,
                member_code=member.code,
                template_id=template_id,
                reason=reason,
                idempotency_key=idempotency_key,
            )
    return coupon, created


# Expiry -------------------------------------------------------------------------------------------


async def expire_coupons(now: datetime) -> int:
    """Issued coupons whose `valid_until` has passed become expired (due-and-not-done; idempotent)."""
    total = 0
    while True:
        async with in_transaction():
            batch = (
                await Coupon.select_for_update()
                .filter(status=CouponStatus.ISSUED, valid_until__lte=now)
                .order_by("id")
                .limit(EXPIRY_BATCH)
            )
            if not batch:
                return total
            await Coupon.filter(id__in=[c.id for c in batch], status=CouponStatus.ISSUED).update(
                status=CouponStatus.EXPIRED
            )
            await CouponEvent.bulk_create(
                [
                    CouponEvent(
                        merchant_id=c.merchant_id,
                        coupon_id=c.id,
                        kind="expired",
                        actor="system",
                        reference=c.valid_until.astimezone(UTC).isoformat()[:64],
                    )
                    for c in batch
                ]
            )
        total += len(batch)


async def expiry_job(now: datetime) -> dict[str, int]:
    """The hourly job (`coupon_expiry` in `handlers.jobs`)."""
    return {"expired": await expire_coupons(now)}


# Gifts (the `tier.upgraded` and `member.registered` effects of handlers.effects) --------------------


async def gift_coupons(
    merchant: Merchant, member_id: int, template_ids: tuple[int, ...], source: str, key: str, now: datetime
) -> list[str]:
    """Issue one coupon of each template (`<key>:<template>`: once each); the names of those issued."""
    issued: list[str] = []
    for template_id in template_ids:
        try:
            coupon = await issue(
                merchant,
                member_id,
                template_id,
                source=source,
                key=f"{key}:{template_id}",
                now=now,
            )
            issued.append((await CouponTemplate.get(id=coupon.template_id)).name)
        except DomainError as exc:  # out of stock, deactivated, deleted: the other gifts still go out
            log.warning(
                "coupon gift not issued",
                extra={
                    "member_id": member_id,
                    "template_id": template_id,
                    "source": source,
                    "reason": exc.message,
                },
            )
    return issued


async def tier_gift(merchant: Merchant, member_id: int, tier: Tier, *, now: datetime) -> None:
    """The tier's gift coupons, once per member, tier and template."""
    await gift_coupons(
        merchant,
        member_id,
        tier.benefits.upgrade_gift_coupon_template_ids,
        "tier_gift",
        f"tiergift:{member_id}:{tier.code}",
        now,
    )


async def new_member_gift(member: Member, *, now: datetime) -> None:
    """The programme's new-member coupons, once per member and template."""
    if member.anonymized_at is not None:
        return
    merchant = await Merchant.get(id=member.merchant_id)
    program = await loyalty_config.program(merchant.id)
    await gift_coupons(
        merchant,
        member.id,
        program.new_member_coupon_template_ids,
        "new_member",
        f"newmember:{member.id}",
        now,
    )
