"""Coupon endpoints: the member's coupons, the cashier's pre-purchase check, and the admin console
(templates, manual issuance, revocation, listing).

Coupon refusals carry their own codes (`coupon_not_found`, `coupon_used`, `coupon_expired`,
`coupon_not_applicable`, `coupon_out_of_stock`, …): 404 for an unknown coupon or template, 409 for
everything else. Configuring templates needs an admin; issuing, revoking and listing a manager.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, model_validator

from handlers.coupons import issue as coupon_issue
from handlers.coupons import redeem as coupons
from handlers.coupons.issue import CouponCode, CouponError, TemplateSpec
from handlers.coupons.redeem import CouponView, State
from handlers.members import blocking
from handlers.members import lookup as members
from handlers.rules import coupons as rules
from models.coupon import CouponKind, CouponStatus, CouponTemplate
from models.merchant import Merchant, Store
from webhooks.api import ApiError, BigId, Call, In, IntId, Line, Out, Routes
from webhooks.auth import ADMIN, CASHIER, MANAGER, MEMBER
from webhooks.mp import MerchantPath

routes = Routes("coupons")
T = TypeVar("T")
Fen = Annotated[StrictInt, Field(ge=0, le=rules.MAX_FEN)]
Key = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,100}$", description="idempotency key")]
Reason = Annotated[Line, Field(min_length=1, max_length=coupons.MAX_REASON)]
CodeText = Annotated[Line, Field(min_length=1, max_length=32, description="the coupon code")]
MemberCode = Annotated[Line, Field(min_length=1, max_length=20)]
_NOT_FOUND = {CouponCode.NOT_FOUND, CouponCode.TEMPLATE_NOT_FOUND}


async def guarded(call: Awaitable[T]) -> T:
    """Await a coupon use case, answering a CouponError with its own code (404 or 409)."""
    try:
        return await call
    except CouponError as exc:
        status = 404 if exc.coupon_code in _NOT_FOUND else 409
        raise ApiError(status, exc.coupon_code, exc.message, field=exc.field) from None


class CouponOut(Out):
    id: int
    code: str
    name: str
    kind: CouponKind
    description: str = Field(examples=["满100减20"])
    state: State
    valid_from: datetime
    valid_until: datetime = Field(description="exclusive: usable before this instant")
    validity: str = Field(description="merchant-local, ends included, e.g. 2024-05-01 至 2024-05-31")
    threshold_fen: int
    gift_name: str
    store_codes: list[str] | None = Field(description="stores where it is valid; null: every store")
    source: str
    used_at: datetime | None
    discount_fen: int = Field(description="what it took off when used")


def coupon_out(view: CouponView, merchant: Merchant) -> CouponOut:
    coupon, template = view.coupon, view.template
    return CouponOut(
        id=coupon.id,
        code=coupon.code,
        name=template.name,
        kind=template.kind,
        description=view.description,
        state=view.state,
        valid_from=coupon.valid_from,
        valid_until=coupon.valid_until,
        validity=rules.validity_text(coupon.valid_from, coupon.valid_until, merchant.timezone),
        threshold_fen=template.threshold_fen,
        gift_name=template.gift_name,
        store_codes=template.store_codes,
        source=coupon.source,
        used_at=coupon.used_at,
        discount_fen=coupon.discount_fen,
    )


class CouponListOut(Out):
    items: list[CouponOut]


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MineQuery(_Query):
    status: State | None = None


# Member ------------------------------------------------------------------------------------------


@routes.get(
    "/api/mp/{merchant_slug}/coupons",
    path_model=MerchantPath,
    response=CouponListOut,
    auth=MEMBER,
    errors=(400,),
)
async def my_coupons(call: Call[None, MerchantPath]) -> CouponListOut:
    """The member's coupons, usable first (?status=usable|upcoming|used|expired|revoked)."""
    state = MineQuery.model_validate(dict(call.request.query)).status
    views = await coupons.member_coupons(call.merchant, call.member.id, state=state, now=datetime.now(UTC))
    return CouponListOut(items=[coupon_out(v, call.merchant) for v in views])


# Staff -------------------------------------------------------------------------------------------


class CheckIn(In):
    member_id: IntId | None = None
    member_code: MemberCode | None = None
    code: CodeText
    order_fen: Annotated[StrictInt, Field(ge=1, le=rules.MAX_FEN, description="order amount in fen")]

    @model_validator(mode="after")
    def _one_member(self) -> CheckIn:
        if (self.member_id is None) == (self.member_code is None):
            raise ValueError("member_id 和 member_code 须且只能填写一个")
        return self


class QuoteOut(Out):
    coupon_id: int
    code: str
    kind: CouponKind
    description: str
    discount_fen: int = Field(description="what it takes off this order (0 for a gift coupon)")
    gift_name: str
    pay_fen: int = Field(description="order_fen minus discount_fen")


@routes.post("/api/staff/coupons/check", body=CheckIn, response=QuoteOut, auth=CASHIER, errors=(404, 409))
async def check(call: Call[CheckIn, None]) -> QuoteOut:
    """Before recording a purchase: does the member's coupon apply here, and what does it take off?"""
    body = call.body
    member = await members.resolve(call.merchant, member_id=body.member_id, code=body.member_code)
    blocking.ensure_active(member)
    store = await Store.get_or_none(id=call.staff.store_id) if call.staff.store_id is not None else None
    found = await guarded(
        coupons.quote(
            call.merchant,
            member.id,
            body.code,
            order_fen=body.order_fen,
            store_code=store.code if store else None,
            now=datetime.now(UTC),
        )
    )
    coupon = await coupons.by_code(call.merchant, found.code)
    template = await CouponTemplate.get(id=coupon.template_id)
    return QuoteOut(
        coupon_id=found.coupon_id,
        code=found.code,
        kind=CouponKind(found.kind),
        description=coupon_issue.describe(template),
        discount_fen=found.discount_fen,
        gift_name=found.gift_name,
        pay_fen=body.order_fen - found.discount_fen,
    )


# Admin: templates --------------------------------------------------------------------------------


class TemplateIn(In):
    name: Annotated[Line, Field(min_length=1, max_length=64)]
    kind: CouponKind
    threshold_fen: Fen = 0
    amount_off_fen: Fen = 0
    percent_off: Annotated[StrictInt, Field(ge=0, le=99, description="20 = 20% off (8折)")] = 0
    cap_fen: Annotated[StrictInt, Field(ge=1, le=rules.MAX_FEN)] | None = None
    gift_name: Annotated[Line, Field(max_length=64)] = ""
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = Field(default=None, description="exclusive end")
    valid_days: Annotated[StrictInt, Field(ge=1, le=rules.MAX_VALID_DAYS)] | None = Field(
        default=None, description="instead of fixed dates: valid until the end of the day N days after issue"
    )
    total_stock: Annotated[StrictInt, Field(ge=1, le=100_000_000)] | None = None
    limit_per_member: Annotated[StrictInt, Field(ge=1, le=100_000_000)] | None = None
    store_codes: (
        Annotated[
            list[Annotated[Line, Field(min_length=1, max_length=32)]],
            Field(min_length=1, max_length=coupon_issue.MAX_STORES),
        ]
        | None
    ) = None
    active: bool = True

    def spec(self) -> TemplateSpec:
        terms = rules.Terms(
            kind=self.kind.value,
            threshold_fen=self.threshold_fen,
            amount_off_fen=self.amount_off_fen,
            percent_off=self.percent_off,
            cap_fen=self.cap_fen,
            gift_name=self.gift_name,
        )
        validity = rules.Validity(self.valid_from, self.valid_until, self.valid_days)
        stores = tuple(self.store_codes) if self.store_codes is not None else None
        return TemplateSpec(
            self.name, terms, validity, self.total_stock, self.limit_per_member, stores, self.active
        )


class TemplateOut(Out):
    id: int
    name: str
    kind: CouponKind
    description: str = Field(examples=["满100减20"])
    threshold_fen: int
    amount_off_fen: int
    percent_off: int
    cap_fen: int | None
    gift_name: str
    valid_from: datetime | None
    valid_until: datetime | None
    valid_days: int | None
    total_stock: int | None
    issued: int
    limit_per_member: int | None
    store_codes: list[str] | None
    active: bool
    created_at: datetime


def template_out(t: CouponTemplate) -> TemplateOut:
    return TemplateOut(
        id=t.id,
        name=t.name,
        kind=t.kind,
        description=coupon_issue.describe(t),
        threshold_fen=t.threshold_fen,
        amount_off_fen=t.amount_off_fen,
        percent_off=t.percent_off,
        cap_fen=t.cap_fen,
        gift_name=t.gift_name,
        valid_from=t.valid_from,
        valid_until=t.valid_until,
        valid_days=t.valid_days,
        total_stock=t.total_stock,
        issued=t.issued,
        limit_per_member=t.limit_per_member,
        store_codes=t.store_codes,
        active=t.active,
        created_at=t.created_at,
    )


class TemplateListOut(Out):
    items: list[TemplateOut]


class TemplatePath(In):
    template_id: IntId


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


@routes.get("/api/admin/coupons/templates", response=TemplateListOut, auth=MANAGER)
async def list_templates(call: Call[None, None]) -> TemplateListOut:
    """Every coupon template of the merchant, newest first."""
    rows = await CouponTemplate.filter(merchant_id=call.merchant.id).order_by("-id")
    return TemplateListOut(items=[template_out(t) for t in rows])


@routes.post("/api/admin/coupons/templates", body=TemplateIn, response=TemplateOut, status=201, auth=ADMIN)
async def create_template(call: Call[TemplateIn, None]) -> TemplateOut:
    """Create a template (满减, percentage with cap, or gift); a 400 names the failing field."""
    created = await coupon_issue.create_template(call.merchant, call.body.spec(), actor=_actor(call))
    return template_out(created)


@routes.get(
    "/api/admin/coupons/templates/{template_id}", path_model=TemplatePath, response=TemplateOut, auth=MANAGER
)
async def get_template(call: Call[None, TemplatePath]) -> TemplateOut:
    """One template, with how many coupons it has issued."""
    return template_out(await guarded(coupon_issue.get_template(call.merchant, call.path.template_id)))


@routes.put(
    "/api/admin/coupons/templates/{template_id}",
    path_model=TemplatePath,
    body=TemplateIn,
    response=TemplateOut,
    auth=ADMIN,
    errors=(409,),
)
async def replace_template(call: Call[TemplateIn, TemplatePath]) -> TemplateOut:
    """Replace a template; once coupons are issued its terms are frozen (409 naming the field)."""
    return template_out(
        await guarded(
            coupon_issue.replace_template(
                call.merchant, call.path.template_id, call.body.spec(), actor=_actor(call)
            )
        )
    )


@routes.delete(
    "/api/admin/coupons/templates/{template_id}", path_model=TemplatePath, auth=ADMIN, errors=(409,)
)
async def delete_template(call: Call[None, TemplatePath]) -> None:
    """Delete a template that never issued a coupon (otherwise set active=false)."""
    await guarded(coupon_issue.delete_template(call.merchant, call.path.template_id, actor=_actor(call)))


# Admin: coupons ----------------------------------------------------------------------------------


class IssueIn(In):
    member_code: MemberCode
    template_id: IntId
    idempotency_key: Key
    reason: Reason


class IssuedOut(Out):
    member_code: str
    coupon: CouponOut
    replayed: bool = Field(description="true when the key was used before: nothing new was issued")


@routes.post("/api/admin/coupons/issue", body=IssueIn, response=IssuedOut, auth=MANAGER, errors=(404, 409))
async def issue(call: Call[IssueIn, None]) -> IssuedOut:
    """Give a member a coupon by hand (stock and per-member limit apply), with a reason; audit-logged."""
    body, now = call.body, datetime.now(UTC)
    coupon, created = await guarded(
        coupons.issue_manually(
            call.merchant,
            body.member_code,
            body.template_id,
            idempotency_key=body.idempotency_key,
            reason=body.reason,
            staff=call.staff,
            now=now,
        )
    )
    member = await members.resolve(call.merchant, member_id=coupon.member_id)
    shown = coupon_out(await coupons.view(coupon, now), call.merchant)
    return IssuedOut(member_code=member.code, coupon=shown, replayed=not created)


class CouponPath(In):
    coupon_id: BigId


class RevokeIn(In):
    reason: Reason
    member_id: IntId | None = Field(
        None, description="the member expected to hold the coupon: another member's coupon is not found (404)"
    )


@routes.post(
    "/api/admin/coupons/{coupon_id}/revoke",
    path_model=CouponPath,
    body=RevokeIn,
    response=CouponOut,
    auth=MANAGER,
    errors=(409,),
)
async def revoke(call: Call[RevokeIn, CouponPath]) -> CouponOut:
    """Void an issued coupon, with a reason (audit-logged); a used or expired one is refused."""
    now = datetime.now(UTC)
    coupon = await guarded(
        coupons.revoke(
            call.merchant,
            call.path.coupon_id,
            reason=call.body.reason,
            staff=call.staff,
            now=now,
            member_id=call.body.member_id,
        )
    )
    return coupon_out(await coupons.view(coupon, now), call.merchant)


class AdminQuery(_Query):
    template_id: IntId | None = None
    status: CouponStatus | None = None
    member_code: MemberCode | None = None
    cursor: BigId | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 50


class AdminCouponOut(CouponOut):
    member_id: int
    template_id: int


class AdminCouponListOut(Out):
    items: list[AdminCouponOut]
    next_cursor: int | None = Field(description="pass as ?cursor= for older coupons; null at the end")


@routes.get("/api/admin/coupons", response=AdminCouponListOut, auth=MANAGER, errors=(400, 404))
async def list_coupons(call: Call[None, None]) -> AdminCouponListOut:
    """Issued coupons, newest first (?template_id=&status=&member_code=&cursor=&limit=1..100).

    `status` is the stored one: issued, used, expired or revoked.
    """
    query = AdminQuery.model_validate(dict(call.request.query))
    member_id = (
        (await members.resolve(call.merchant, code=query.member_code)).id if query.member_code else None
    )
    views = await coupons.admin_coupons(
        call.merchant,
        template_id=query.template_id,
        status=query.status,
        member_id=member_id,
        cursor=query.cursor,
        limit=query.limit + 1,
        now=datetime.now(UTC),
    )
    items = [
        AdminCouponOut(
            **coupon_out(v, call.merchant).model_dump(),
            member_id=v.coupon.member_id,
            template_id=v.coupon.template_id,
        )
        for v in views[: query.limit]
    ]
    return AdminCouponListOut(items=items, next_cursor=items[-1].id if len(views) > query.limit else None)
