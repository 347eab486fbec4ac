"""Stored value over HTTP: top-up at the till (cashier+), the member's balance, and the admin's
adjustment (admin), cash withdrawal of principal (manager+) and member wallet view (manager+)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field, StrictInt, model_validator

from handlers.members import blocking
from handlers.members import lookup as members
from handlers.rules.wallet import MAX_TOP_UP_FEN
from handlers.staff.scope import activity_store_id
from handlers.wallet import ledger as wallet
from models.member import Member
from models.merchant import Merchant
from models.wallet import WalletKind, WalletTransaction
from webhooks.api import Call, In, Line, Out, Routes
from webhooks.auth import ADMIN, CASHIER, MANAGER, MEMBER
from webhooks.mp import MerchantPath

routes = Routes("wallet")
Q = TypeVar("Q", bound=BaseModel)
Key = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="client-chosen idempotency key; a retry with the same key is safe",
    ),
]
Code = Annotated[str, Field(pattern=r"^[0-9A-Za-z-]{4,20}$", description="the member code")]
Reason = Annotated[Line, Field(min_length=1, max_length=200)]
Method = Literal["cash", "wechat", "alipay", "card", "other"]


class TopUpIn(In):
    member_id: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    member_code: Code | None = None
    amount_fen: Annotated[StrictInt, Field(ge=1, le=MAX_TOP_UP_FEN, description="cash paid, in fen")]
    payment_method: Method
    idempotency_key: Key

    @model_validator(mode="after")
    def _one_member(self) -> TopUpIn:
        if (self.member_id is None) == (self.member_code is None):
            raise ValueError("member_id 和 member_code 须且只能填写一个")
        return self


class WalletPostingOut(Out):
    transaction_id: int
    member_id: int
    member_code: str
    kind: WalletKind
    principal_delta: int
    bonus_delta: int
    principal_after: int
    bonus_after: int
    total_after: int
    tier_changed_to: str | None = Field(default=None, description="set when a top-up upgraded the tier")
    replayed: bool = Field(description="true when the key was used before: nothing new was posted")


class WalletAdjustIn(In):
    member_code: Code
    principal_delta: Annotated[StrictInt, Field(ge=-MAX_TOP_UP_FEN, le=MAX_TOP_UP_FEN)] = 0
    bonus_delta: Annotated[StrictInt, Field(ge=-MAX_TOP_UP_FEN, le=MAX_TOP_UP_FEN)] = 0
    reason: Reason
    idempotency_key: Key


class WalletWithdrawIn(In):
    member_code: Code
    amount_fen: Annotated[StrictInt, Field(ge=1, le=wallet.MAX_PAY_FEN)] | None = Field(
        default=None, description="principal to pay back in cash; omitted: all of it (bonus never)"
    )
    reason: Reason
    idempotency_key: Key


class WalletTransactionOut(Out):
    id: int
    kind: WalletKind
    kind_label: str = Field(examples=["充值"])
    principal_delta: int
    bonus_delta: int
    principal_after: int
    bonus_after: int
    reason: str
    created_at: datetime


class WalletOut(Out):
    principal_fen: int = Field(description="cash paid in; refundable")
    bonus_fen: int = Field(description="gifted; spent last, never paid out in cash")
    total_fen: int
    lifetime_top_up_fen: int
    transactions: list[WalletTransactionOut] = Field(description="the latest rows, newest first")


class WalletQuery(In):
    limit: Annotated[int, Field(ge=1, le=100)] = 20


class WalletMemberPath(In):
    member_code: Code


async def resolve_member(merchant: Merchant, member_id: int | None, member_code: str | None) -> Member:
    """The member named by id or code at the till (`members.resolve`: an erased member is not found)."""
    return await members.resolve(merchant, member_id=member_id, code=member_code)


def _out(posted: wallet.Posting, member: Member) -> WalletPostingOut:
    return WalletPostingOut(
        transaction_id=posted.transaction_id,
        member_id=member.id,
        member_code=member.code,
        kind=posted.kind,
        principal_delta=posted.principal_delta,
        bonus_delta=posted.bonus_delta,
        principal_after=posted.principal_after,
        bonus_after=posted.bonus_after,
        total_after=posted.principal_after + posted.bonus_after,
        tier_changed_to=posted.tier_changed_to,
        replayed=posted.replayed,
    )


def query(request: web.Request, model: type[Q]) -> Q:
    """Validate query parameters (a bad one is a 400 naming it)."""
    return model.model_validate({key: request.query.get(key) for key in request.query})


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


@routes.post(
    "/api/staff/wallet/top-ups", body=TopUpIn, response=WalletPostingOut, auth=CASHIER, errors=(400, 404, 409)
)
async def top_up(call: Call[TopUpIn, None]) -> WalletPostingOut:
    """Top up a member's stored value: principal = the cash paid, plus the programme's bonus."""
    body = call.body
    member = await resolve_member(call.merchant, body.member_id, body.member_code)
    blocking.ensure_active(member)
    posted = await wallet.top_up(
        call.merchant,
        member.id,
        body.amount_fen,
        key=f"topup:{body.idempotency_key}",
        payment_method=body.payment_method,
        now=datetime.now(UTC),
        effects=call.effects,
        actor=_actor(call),
        store_id=await activity_store_id(call.staff, call.merchant.id),
    )
    return _out(posted, member)


@routes.post(
    "/api/admin/wallet/adjust", body=WalletAdjustIn, response=WalletPostingOut, auth=ADMIN, errors=(404, 409)
)
async def adjust(call: Call[WalletAdjustIn, None]) -> WalletPostingOut:
    """Correct a member's principal and/or bonus by hand, with a reason (never below zero; audited)."""
    body = call.body
    member = await members.resolve(call.merchant, code=body.member_code)
    posted = await wallet.adjust(
        call.merchant,
        member.id,
        body.principal_delta,
        body.bonus_delta,
        reason=body.reason,
        key=f"adjust:{body.idempotency_key}",
        actor=_actor(call),
        now=datetime.now(UTC),
        effects=call.effects,
    )
    return _out(posted, member)


@routes.post(
    "/api/admin/wallet/withdraw",
    body=WalletWithdrawIn,
    response=WalletPostingOut,
    auth=MANAGER,
    errors=(404, 409),
)
async def withdraw(call: Call[WalletWithdrawIn, None]) -> WalletPostingOut:
    """Pay a member's principal back in cash (bonus is never paid out); audited."""
    body = call.body
    member = await members.resolve(call.merchant, code=body.member_code)
    posted = await wallet.withdraw(
        call.merchant,
        member.id,
        body.amount_fen,
        reason=body.reason,
        key=f"withdraw:{body.idempotency_key}",
        actor=_actor(call),
        now=datetime.now(UTC),
        effects=call.effects,
    )
    return _out(posted, member)


def transaction_out(txn: WalletTransaction) -> WalletTransactionOut:
    kind = WalletKind(txn.kind)
    return WalletTransactionOut(
        id=txn.id,
        kind=kind,
        kind_label=wallet.KIND_LABELS[kind],
        principal_delta=txn.principal_delta,
        bonus_delta=txn.bonus_delta,
        principal_after=txn.principal_after,
        bonus_after=txn.bonus_after,
        reason=txn.reason,
        created_at=txn.created_at,
    )


async def _wallet(merchant_id: int, member_id: int, limit: int) -> WalletOut:
    found = await wallet.balance(merchant_id, member_id)
    rows = await wallet.recent(merchant_id, member_id, limit)
    return WalletOut(
        principal_fen=found.principal_fen,
        bonus_fen=found.bonus_fen,
        total_fen=found.total_fen,
        lifetime_top_up_fen=found.lifetime_top_up_fen,
        transactions=[transaction_out(t) for t in rows],
    )


@routes.get(
    "/api/mp/{merchant_slug}/wallet", path_model=MerchantPath, response=WalletOut, auth=MEMBER, errors=(400,)
)
async def my_wallet(call: Call[None, MerchantPath]) -> WalletOut:
    """The member's stored value (principal, bonus, total) and latest transactions (`?limit=`, ≤ 100)."""
    return await _wallet(call.merchant.id, call.member.id, query(call.request, WalletQuery).limit)


@routes.get(
    "/api/admin/members/{member_code}/wallet",
    path_model=WalletMemberPath,
    response=WalletOut,
    auth=MANAGER,
    errors=(400,),
)
async def member_wallet(call: Call[None, WalletMemberPath]) -> WalletOut:
    """A member's stored value and latest transactions (`?limit=`, ≤ 100)."""
    member = await members.resolve(call.merchant, code=call.path.member_code)
    return await _wallet(call.merchant.id, member.id, query(call.request, WalletQuery).limit)
