"""Staff at the till: scan a member's card, record a purchase, refund one (role cashier+)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, model_validator

from handlers.credit import ledger as credit
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import points_view, tiers
from handlers.members import lookup as members
from handlers.members import member_qr
from handlers.members.profile import mask_phone
from handlers.products import catalogue as products
from handlers.till import purchase as purchases
from handlers.till import refund as refunds
from models.member import Member
from models.merchant import Merchant
from webhooks.api import Call, In, IntId, Line, Out, Routes
from webhooks.appkeys import RUNTIME
from webhooks.auth import CASHIER

routes = Routes("till")
Key = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="client-chosen idempotency key; a retry with the same key is safe",
    ),
]


CouponCode = Annotated[Line, Field(min_length=1, max_length=16, description="the member's coupon code")]
StoredValue = Annotated[
    int, Field(ge=0, le=purchases.MAX_AMOUNT_FEN, description="part of the payment taken from stored value")
]


class ScanIn(In):
    qr: (
        Annotated[Line, Field(min_length=1, max_length=64, description="the scanned card QR token")] | None
    ) = None
    member_code: (
        Annotated[Line, Field(min_length=1, max_length=16, description="typed member code")] | None
    ) = None

    @model_validator(mode="after")
    def _one_of(self) -> ScanIn:
        if (self.qr is None) == (self.member_code is None):
            raise ValueError("qr 和 member_code 须且只能填写一个")
        return self


class MemberCardOut(Out):
    member_id: int
    member_code: str
    name: str | None
    phone: str = Field(description="masked, e.g. 138****5678")
    tier_code: str
    tier_name: str
    discount_percent: int = Field(description="95 means the member pays 95% (9.5折)")
    balance: int
    pending: int
    expiring_points: int = Field(description="points expiring within 30 days")
    expiring_first_at: datetime | None
    blocked: bool = Field(description="blocked by a manager: cannot earn, spend or redeem")
    blocked_reason: str = Field(description="why, for the cashier (empty when not blocked)")
    credit_limit_fen: int = Field(description="the member's credit limit (0: no credit)")
    credit_owed_fen: int = Field(description="what the member owes on credit now")
    credit_available_fen: int = Field(description="what may still be put on credit (`credit_fen`)")


class ItemIn(In):
    sku: Annotated[Line, Field(min_length=1, max_length=64, description="an active SKU of the catalogue")]
    qty: Annotated[int, Field(ge=1, le=100_000)]
    unit_price_fen: (
        Annotated[int, Field(ge=0, le=10**9, description="default: the catalogue's price")] | None
    ) = None


class PurchaseIn(In):
    idempotency_key: Key
    member_id: IntId | None = None
    member_code: Annotated[Line, Field(min_length=1, max_length=16)] | None = None
    amount_fen: Annotated[int, Field(ge=1, le=purchases.MAX_AMOUNT_FEN, description="order amount in fen")]
    items: Annotated[list[ItemIn], Field(default_factory=list, max_length=200)]
    points_offset: Annotated[int, Field(ge=0, le=100_000_000, description="points to pay with")] = 0
    coupon_code: CouponCode | None = None
    stored_value_fen: StoredValue = 0
    credit_fen: Annotated[
        int,
        Field(
            ge=0, le=purchases.MAX_AMOUNT_FEN, description="part of the payment put on the member's credit"
        ),
    ] = 0

    @model_validator(mode="after")
    def _one_member(self) -> PurchaseIn:
        if (self.member_id is None) == (self.member_code is None):
            raise ValueError("member_id 和 member_code 须且只能填写一个")
        return self


class BreakdownLineOut(Out):
    code: str
    label: str
    points: int


class PurchaseOut(Out):
    purchase_id: int
    member_id: int
    amount_fen: int
    discount_fen: int
    offset_points: int
    offset_fen: int
    paid_fen: int
    points_earned: int
    points_pending: bool = Field(description="held until the refund window passes")
    rule_set_version: int
    breakdown: list[BreakdownLineOut]
    balance: int
    tier_code: str
    tier_changed_to: str | None
    tier_gift_points: int
    referral_awards: int
    replayed: bool
    coupon_code: str | None
    coupon_fen: int = Field(description="what the coupon took off")
    stored_value_fen: int = Field(description="paid from stored value (principal first, bonus last)")
    credit_fen: int = Field(description="put on the member's credit (赊账), owed until repaid")


class PurchasePath(In):
    purchase_id: Annotated[int, Field(ge=1, le=2**62)]


class RefundIn(In):
    idempotency_key: Key


class RefundOut(Out):
    purchase_id: int
    points_reversed: int
    points_voided: int
    offset_restored: int
    balance: int = Field(description="may be negative: a documented claw-back debt")
    replayed: bool
    coupons_restored: int
    stored_value_refunded_fen: int
    credit_reversed_fen: int = Field(description="the purchase's credit charge taken off what is owed")
    credit_cash_back_fen: int = Field(
        description="already repaid of the purchase's credit charge: give it back to the member in cash"
    )


async def member_card(merchant: Merchant, member: Member, now: datetime) -> MemberCardOut:
    _, ladder = await loyalty_config.current_tiers(merchant.id)
    tier = loyalty_config.tier_by_code(ladder, await tiers.tier_code(merchant.id, member.id))
    summary = await points_view.summary(merchant.id, member.id, now=now)
    account = await credit.balance(merchant.id, member.id)
    return MemberCardOut(
        member_id=member.id,
        member_code=member.code,
        name=member.name,
        phone=mask_phone(member.phone),
        tier_code=tier.code,
        tier_name=tier.name,
        discount_percent=tier.benefits.discount_percent,
        balance=summary.balance,
        pending=summary.pending,
        expiring_points=summary.expiring,
        expiring_first_at=summary.expiring_first_at,
        blocked=member.blocked_at is not None,
        blocked_reason=member.blocked_reason,
        credit_limit_fen=account.limit_fen,
        credit_owed_fen=account.owed_fen,
        credit_available_fen=account.available_fen,
    )


@routes.post("/api/staff/scan", body=ScanIn, response=MemberCardOut, auth=CASHIER, errors=(400, 404))
async def scan(call: Call[ScanIn, None]) -> MemberCardOut:
    """Identify the member from their card QR (refused once older than two 60 s windows) or typed code."""
    now = datetime.now(UTC)
    field, raw = ("qr", call.body.qr) if call.body.qr is not None else ("member_code", call.body.member_code)
    member = await member_qr.resolve_scan(
        call.merchant, raw or "", secret=call.request.app[RUNTIME].secret, now=now, field=field
    )
    return await member_card(call.merchant, member, now)


@routes.post(
    "/api/staff/purchases", body=PurchaseIn, response=PurchaseOut, auth=CASHIER, errors=(400, 404, 409)
)
async def record(call: Call[PurchaseIn, None]) -> PurchaseOut:
    """Record a purchase: tier discount, points offset, points earned (with breakdown), tier change.

    Items name catalogue SKUs (400 naming the item for an unknown or inactive one); their category and
    default unit price come from the catalogue, so category and SKU earn rules apply."""
    body = call.body
    member_id = body.member_id
    if member_id is None:
        member_id = (await members.resolve(call.merchant, code=body.member_code or "")).id
    lines = [products.ItemLine(i.sku, i.qty, i.unit_price_fen) for i in body.items]
    priced = await products.price_items(call.merchant.id, lines)  # category and cost from the catalogue
    request = purchases.PurchaseRequest(
        body.idempotency_key,
        member_id,
        body.amount_fen,
        priced.items,
        body.points_offset,
        body.coupon_code,
        body.stored_value_fen,
        item_costs=priced.unit_costs,
        credit_fen=body.credit_fen,
    )
    result = await purchases.record_purchase(
        call.merchant, call.staff, request, now=datetime.now(UTC), effects=call.effects
    )
    return PurchaseOut(**_public(result.__dataclass_fields__, result))


@routes.post(
    "/api/staff/purchases/{purchase_id}/refund",
    path_model=PurchasePath,
    body=RefundIn,
    response=RefundOut,
    auth=CASHIER,
    errors=(400, 404, 409),
)
async def refund(call: Call[RefundIn, PurchasePath]) -> RefundOut:
    """Refund a purchase once: points clawed back (or voided while pending), offset points returned."""
    result = await refunds.refund_purchase(
        call.merchant,
        call.staff,
        call.path.purchase_id,
        key=call.body.idempotency_key,
        now=datetime.now(UTC),
        effects=call.effects,
    )
    return RefundOut(**_public(result.__dataclass_fields__, result))


def _public(fields: dict[str, Any], result: object) -> dict[str, Any]:
    return {name: getattr(result, name) for name in fields if name != "extra"}
