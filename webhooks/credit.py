"""Credit (信用额度 / 赊账) over HTTP: a manager sets a member's limit (audited), the till takes
repayments (cashier+; a purchase puts part of its amount on credit with `credit_fen`, `webhooks.till`),
the back office reads the overdue members (the credit warning) as JSON or CSV and sets after how
many days a charge is overdue (admin, audited), and the member reads their own credit in the
mini-program."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field, StrictInt, model_validator

from handlers.credit import ledger as credit
from handlers.credit import overdue
from handlers.members import lookup as members
from handlers.members.profile import mask_phone
from handlers.staff.scope import Scope, activity_store_id, scope_of
from models.credit import CreditEntry, CreditKind
from webhooks.admin_members import MemberPath
from webhooks.api import Call, In, IntId, Line, Out, Routes
from webhooks.auth import ADMIN, CASHIER, MANAGER, MEMBER
from webhooks.mp import MerchantPath

routes = Routes("credit")
Key = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="client-chosen idempotency key; a retry with the same key is safe",
    ),
]
Fen = Annotated[StrictInt, Field(ge=1, le=credit.MAX_LIMIT_FEN)]


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


class CreditLimitIn(In):
    limit_fen: Annotated[
        StrictInt, Field(ge=0, le=credit.MAX_LIMIT_FEN, description="the new limit in fen; 0 closes credit")
    ]
    reason: Annotated[Line, Field(max_length=credit.MAX_REASON, examples=["老客户，月结"])] = ""
    idempotency_key: Key


class CreditLimitOut(Out):
    member_id: int
    limit_fen: int
    previous_limit_fen: int
    owed_fen: int
    available_fen: int
    entry_id: int | None = Field(description="the ledger row; null when the limit already was this")
    replayed: bool


@routes.put(
    "/api/admin/members/{member_id}/credit-limit",
    path_model=MemberPath,
    body=CreditLimitIn,
    response=CreditLimitOut,
    auth=MANAGER,
    errors=(400, 404, 409),
)
async def set_limit(call: Call[CreditLimitIn, MemberPath]) -> CreditLimitOut:
    """Set the member's credit limit (audited); below what the member owes is refused (409)."""
    member = await members.resolve(call.merchant, member_id=call.path.member_id)
    change = await credit.set_limit(
        call.merchant,
        member.id,
        call.body.limit_fen,
        key=f"limit:{call.body.idempotency_key}",
        now=datetime.now(UTC),
        actor=_actor(call),
        staff_id=call.staff.id,
        reason=call.body.reason,
    )
    return CreditLimitOut(
        member_id=member.id,
        limit_fen=change.limit_fen,
        previous_limit_fen=change.previous_limit_fen,
        owed_fen=change.owed_fen,
        available_fen=max(change.limit_fen - change.owed_fen, 0),
        entry_id=change.entry_id,
        replayed=change.replayed,
    )


class RepaymentIn(In):
    member_id: IntId | None = None
    member_code: Annotated[Line, Field(min_length=1, max_length=16)] | None = None
    amount_fen: Annotated[Fen, Field(description="paid back, in fen; at most what is owed")]
    payment_method: Literal["cash", "wechat", "alipay", "card", "other"]
    idempotency_key: Key

    @model_validator(mode="after")
    def _one_member(self) -> RepaymentIn:
        if (self.member_id is None) == (self.member_code is None):
            raise ValueError("member_id 和 member_code 须且只能填写一个")
        return self


class RepaymentOut(Out):
    entry_id: int
    member_id: int
    amount_fen: int
    owed_fen: int = Field(description="still owed after this repayment")
    limit_fen: int
    replayed: bool


@routes.post(
    "/api/staff/credit/repayments",
    body=RepaymentIn,
    response=RepaymentOut,
    auth=CASHIER,
    errors=(400, 404, 409),
)
async def repay(call: Call[RepaymentIn, None]) -> RepaymentOut:
    """Take a repayment of the member's credit at the till (a blocked member may repay too)."""
    body = call.body
    member = await members.resolve(call.merchant, member_id=body.member_id, code=body.member_code)
    paid = await credit.repay(
        call.merchant,
        member.id,
        body.amount_fen,
        key=f"repay:{body.idempotency_key}",
        payment_method=body.payment_method,
        now=datetime.now(UTC),
        actor=_actor(call),
        staff_id=call.staff.id,
        store_id=await activity_store_id(call.staff, call.merchant.id),
    )
    return RepaymentOut(
        entry_id=paid.entry_id,
        member_id=member.id,
        amount_fen=paid.amount_fen,
        owed_fen=paid.owed_fen,
        limit_fen=paid.limit_fen,
        replayed=paid.replayed,
    )


class CreditEntryOut(Out):
    id: int
    kind: CreditKind
    kind_label: str = Field(examples=["赊账消费"])
    amount_fen: int = Field(description="change of what is owed: + charge, − repayment or reversal, 0 limit")
    balance_after: int = Field(description="owed after this entry")
    limit_after: int
    purchase_id: int | None
    staff_id: int | None
    store_id: int | None
    due_at: datetime | None = Field(description="charges: repay by then, else overdue")
    reason: str
    created_at: datetime


def entry_out(entry: CreditEntry) -> CreditEntryOut:
    kind = CreditKind(entry.kind)
    return CreditEntryOut(
        id=entry.id,
        kind=kind,
        kind_label=credit.KIND_LABELS[kind],
        amount_fen=entry.amount_fen,
        balance_after=entry.balance_after,
        limit_after=entry.limit_after,
        purchase_id=entry.purchase_id,
        staff_id=entry.staff_id,
        store_id=entry.store_id,
        due_at=entry.due_at,
        reason=entry.reason,
        created_at=entry.created_at,
    )


class CreditSettingsIn(In):
    overdue_days: Annotated[
        StrictInt,
        Field(ge=1, le=overdue.MAX_OVERDUE_DAYS, description="a charge unpaid this many days is overdue"),
    ]


class CreditSettingsOut(Out):
    overdue_days: int = Field(description="applies to charges made after a change")


@routes.get("/api/admin/credit/settings", response=CreditSettingsOut, auth=MANAGER)
async def settings(call: Call[None, None]) -> CreditSettingsOut:
    """After how many days an unpaid credit charge is overdue."""
    return CreditSettingsOut(overdue_days=call.merchant.credit_overdue_days)


@routes.put(
    "/api/admin/credit/settings", body=CreditSettingsIn, response=CreditSettingsOut, auth=ADMIN, errors=(400,)
)
async def set_settings(call: Call[CreditSettingsIn, None]) -> CreditSettingsOut:
    """Set after how many days an unpaid credit charge is overdue (audited; later charges)."""
    await overdue.set_overdue_days(call.merchant, call.body.overdue_days, actor=_actor(call))
    return CreditSettingsOut(overdue_days=call.merchant.credit_overdue_days)


class OverdueQuery(In):
    as_of: datetime | None = Field(default=None, description="default: now; ISO 8601 with a time zone")
    store_id: IntId | None = Field(default=None, description="the members' store (a manager: their own)")

    @model_validator(mode="after")
    def _aware(self) -> OverdueQuery:
        if self.as_of is not None and self.as_of.tzinfo is None:
            raise ValueError("as_of 须带时区，例如 2026-12-01T00:00:00+08:00")
        return self


class OverdueOut(Out):
    member_id: int
    member_code: str
    name: str | None
    phone: str = Field(description="masked, e.g. 138****5678")
    store_id: int | None
    overdue_fen: int = Field(description="charges past their due date not yet repaid (FIFO)")
    oldest_due_at: datetime
    days_overdue: int = Field(description="whole days since the oldest unpaid due date")
    owed_fen: int = Field(description="everything owed as of the date, overdue or not")
    limit_fen: int


class OverdueListOut(Out):
    as_of: datetime
    overdue_days: int
    total_overdue_fen: int
    items: list[OverdueOut]


async def _overdue(call: Call[None, None]) -> tuple[datetime, list[overdue.Overdue]]:
    query: OverdueQuery = call.query
    as_of = query.as_of or datetime.now(UTC)
    found = await overdue.overdue(call.merchant, as_of, scope=scope_of(call.staff), store_id=query.store_id)
    return as_of, found


@routes.get(
    "/api/admin/credit/overdue", query=OverdueQuery, response=OverdueListOut, auth=MANAGER, errors=(403,)
)
async def list_overdue(call: Call[None, None]) -> OverdueListOut:
    """Members with overdue credit (信用预警), oldest due date first; a manager sees their store's."""
    as_of, found = await _overdue(call)
    return OverdueListOut(
        as_of=as_of,
        overdue_days=call.merchant.credit_overdue_days,
        total_overdue_fen=sum(row.overdue_fen for row in found),
        items=[
            OverdueOut(
                member_id=row.member_id,
                member_code=row.member_code,
                name=row.name,
                phone=mask_phone(row.phone),
                store_id=row.store_id,
                overdue_fen=row.overdue_fen,
                oldest_due_at=row.oldest_due_at,
                days_overdue=row.days_overdue,
                owed_fen=row.owed_fen,
                limit_fen=row.limit_fen,
            )
            for row in found
        ],
    )


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@routes.get("/api/admin/credit/overdue.xlsx", query=OverdueQuery, media=XLSX, auth=MANAGER, errors=(403,))
async def overdue_xlsx(call: Call[None, None]) -> web.Response:
    """The overdue members as an XLSX workbook (phones masked)."""
    as_of, found = await _overdue(call)
    body = await asyncio.to_thread(overdue.to_xlsx, found, call.merchant.timezone)
    stamp = as_of.astimezone(UTC).strftime("%Y%m%d")
    return web.Response(
        body=body,
        headers={
            "Content-Type": XLSX,
            "Content-Disposition": f'attachment; filename="credit-overdue-{stamp}.xlsx"',
            "Cache-Control": "no-store",
        },
    )


@routes.get(
    "/api/admin/credit/overdue.csv",
    query=OverdueQuery,
    media="text/csv; charset=utf-8",
    auth=MANAGER,
    errors=(403,),
)
async def overdue_csv(call: Call[None, None]) -> web.Response:
    """The overdue members as CSV (phones masked)."""
    as_of, found = await _overdue(call)
    stamp = as_of.astimezone(UTC).strftime("%Y%m%d")
    return web.Response(
        body=overdue.to_csv(found, call.merchant.timezone),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="credit-overdue-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )


class MyCreditQuery(In):
    limit: Annotated[int, Field(ge=1, le=100)] = 20


class MyCreditOut(Out):
    limit_fen: int = Field(description="the credit limit the merchant gave (0: no credit)")
    owed_fen: int
    available_fen: int
    overdue_fen: int = Field(description="of what is owed, the part past its due date")
    next_due_at: datetime | None = Field(description="the earliest due date of what is still owed")
    entries: list[CreditEntryOut] = Field(description="the latest entries, newest first")


@routes.get(
    "/api/mp/{merchant_slug}/credit",
    path_model=MerchantPath,
    query=MyCreditQuery,
    response=MyCreditOut,
    auth=MEMBER,
)
async def my_credit(call: Call[None, MerchantPath]) -> MyCreditOut:
    """The member's own credit: limit, what they owe, how much is overdue, and the latest entries."""
    merchant, member, now = call.merchant, call.member, datetime.now(UTC)
    account = await credit.balance(merchant.id, member.id)
    everyone = Scope(merchant.id, None)
    late = await overdue.overdue(merchant, now, scope=everyone, member_id=member.id)
    query: MyCreditQuery = call.query
    rows = await credit.entries(merchant.id, member.id).order_by("-id").limit(query.limit)
    return MyCreditOut(
        limit_fen=account.limit_fen,
        owed_fen=account.owed_fen,
        available_fen=account.available_fen,
        overdue_fen=late[0].overdue_fen if late else 0,
        next_due_at=await overdue.next_due(merchant, member.id, now) if account.owed_fen else None,
        entries=[entry_out(row) for row in rows],
    )
