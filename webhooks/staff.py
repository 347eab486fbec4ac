"""Staff JSON API: login (with lockout and a per-IP rate limit), logout, and who am I."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import Field

from handlers.core.errors import ErrorCode
from handlers.staff import auth as staff_auth
from handlers.staff.sessions import SessionKind
from models.merchant import Merchant
from models.staff import Staff, StaffRole
from webhooks.api import ApiError, Call, In, Line, Out, Routes
from webhooks.auth import CASHIER, bearer_token, rate_limit, session_store

LOGIN_ATTEMPTS = 20
LOGIN_WINDOW_SECONDS = 600

routes = Routes("staff")


class StaffLoginIn(In):
    merchant: Annotated[Line, Field(min_length=1, max_length=64, description="the merchant's slug")]
    username: Annotated[Line, Field(min_length=1, max_length=64)]
    password: Annotated[Line, Field(min_length=1, max_length=256)]


class StoreOut(Out):
    id: int
    code: str
    name: str


class StaffMerchantOut(Out):
    slug: str
    name: str


class StaffOut(Out):
    id: int
    username: str
    role: StaffRole
    store: StoreOut | None
    merchant: StaffMerchantOut


class StaffLoginOut(Out):
    token: str = Field(description="bearer token for the Authorization header")
    expires_in: int = Field(description="seconds until the token expires")
    staff: StaffOut


async def staff_out(staff: Staff, merchant: Merchant) -> StaffOut:
    store = await staff_auth.staff_store(staff)
    return StaffOut(
        id=staff.id,
        username=staff.username,
        role=StaffRole(staff.role),
        store=StoreOut(id=store.id, code=store.code, name=store.name) if store is not None else None,
        merchant=StaffMerchantOut(slug=merchant.slug, name=merchant.name),
    )


async def _locked(slug: str, exc: staff_auth.AccountLocked, now: datetime) -> ApiError:
    merchant = await Merchant.get_or_none(slug=slug)
    zone = ZoneInfo(merchant.timezone if merchant is not None else "Asia/Shanghai")
    local = exc.until.astimezone(zone).strftime("%H:%M")
    retry = max(1, math.ceil((exc.until - now).total_seconds()))
    return ApiError(
        423,
        ErrorCode.LOCKED,
        f"连续多次密码错误，账号已锁定，请于 {local} 后再试",
        headers={"Retry-After": str(retry)},
    )


@routes.post("/api/staff/login", body=StaffLoginIn, response=StaffLoginOut, errors=(401, 423, 429))
async def login(call: Call[StaffLoginIn, None]) -> StaffLoginOut:
    """Log a staff member in; wrong passwords lock the account (423) after five attempts."""
    body = call.body
    await rate_limit(
        call.request,
        "staff-login",
        f"{body.merchant}|{body.username.lower()}",
        limit=LOGIN_ATTEMPTS,
        window=LOGIN_WINDOW_SECONDS,
    )
    now = datetime.now(UTC)
    try:
        staff = await staff_auth.authenticate(body.merchant, body.username, body.password, now=now)
    except staff_auth.AccountLocked as exc:
        raise await _locked(body.merchant, exc, now) from None
    merchant = await Merchant.get(id=staff.merchant_id)
    issued = await session_store(call.request).issue(
        SessionKind.STAFF, merchant.id, staff.id, data={"epoch": str(staff.session_epoch)}
    )
    out = await staff_out(staff, merchant)
    return StaffLoginOut(token=issued.token, expires_in=issued.expires_in, staff=out)


@routes.post("/api/staff/logout", auth=CASHIER)
async def logout(call: Call[None, None]) -> None:
    """Revoke the presented staff token."""
    await session_store(call.request).revoke(bearer_token(call.request) or "")


@routes.get("/api/staff/me", response=StaffOut, auth=CASHIER)
async def me(call: Call[None, None]) -> StaffOut:
    """The logged-in staff member, their store and merchant."""
    return await staff_out(call.staff, call.merchant)
