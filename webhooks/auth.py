"""Bearer-token authentication for the JSON APIs: member sessions, staff sessions with a minimum role,
and per-IP login rate limits.

Every failure is a 401 with `WWW-Authenticate: Bearer` (missing, unknown, expired or revoked token, a
token of the wrong kind, a token of another merchant, a deactivated account, a staff session issued
before the account was deactivated or its password reset), except a staff role below the endpoint's
minimum, which is a 403.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from handlers.core import queries
from handlers.core.errors import ErrorCode
from handlers.staff.accounts import staff_account
from handlers.staff.auth import has_role
from handlers.staff.merchants import merchant_by_id
from handlers.staff.sessions import Session, SessionKind, SessionStore
from models.member import Member
from models.staff import StaffRole
from webhooks.api import ApiError, Principal
from webhooks.appkeys import REDIS

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="memberbot"'}
ROLE_NAMES = {StaffRole.CASHIER: "收银员", StaffRole.MANAGER: "店长", StaffRole.ADMIN: "管理员"}


def session_store(request: web.Request) -> SessionStore:
    return SessionStore(request.app[REDIS])


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def unauthorized(message: str = "请先登录") -> ApiError:
    return ApiError(401, ErrorCode.UNAUTHORIZED, message, headers=CHALLENGE)


async def _session(request: web.Request, kind: SessionKind) -> Session:
    token = bearer_token(request)
    if token is None:
        raise unauthorized()
    session = await session_store(request).resolve(token)
    if session is None or session.kind is not kind:
        raise unauthorized("登录已失效，请重新登录")
    return session


def session_epoch(session: Session) -> int:
    """The staff account's `session_epoch` when the session was issued (0 for sessions without one)."""
    raw = session.data.get("epoch", "0")
    return int(raw) if raw.isdigit() else -1


@dataclass(frozen=True, slots=True)
class MemberAuth:
    """A mini-program member session; the path's `merchant_slug` must be the session's merchant."""

    scheme_name: str = "memberSession"
    statuses: tuple[int, ...] = (401,)
    announces: bool = False
    reads_member: bool = True  # False: the session and merchant only; the use case reads the member
    deferred: bool = False  # True: the handler authenticates (`webhooks.api.Call.authenticate`)

    def security_scheme(self) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "Mini-program member session token from POST /api/mp/{merchant_slug}/login.",
        }

    def describe(self) -> str:
        return "Requires a member session of the merchant named in the path."

    async def resolve(self, request: web.Request, path: Any) -> Principal:
        return await self.principal(await _session(request, SessionKind.MEMBER), path)

    async def principal(self, session: Session | None, path: Any) -> Principal:
        """The caller of a live session read elsewhere (None: the token named no live session), as
        `resolve` would find it."""
        if session is None or session.kind is not SessionKind.MEMBER:
            raise unauthorized("登录已失效，请重新登录")
        merchant = await merchant_by_id(session.merchant_id)
        if merchant is None or merchant.slug != getattr(path, "merchant_slug", None):
            raise unauthorized("登录凭证不属于该商户")
        if not self.reads_member:
            return Principal(merchant=merchant, session=session)
        member = await queries.first(Member, id=session.subject_id, merchant_id=merchant.id)
        if member is None or member.anonymized_at is not None:
            raise unauthorized("会员不存在，请重新登录")
        return Principal(merchant=merchant, session=session, member=member)


@dataclass(frozen=True, slots=True)
class StaffAuth:
    """A staff session of an active account whose role is at least `minimum`, within its own merchant."""

    minimum: StaffRole = StaffRole.CASHIER
    scheme_name: str = "staffSession"
    deferred: bool = False

    @property
    def statuses(self) -> tuple[int, ...]:
        return (401,) if self.minimum is StaffRole.CASHIER else (401, 403)

    @property
    def announces(self) -> bool:
        """Managers and admins change configuration (`handlers.core.config_cache`); cashiers do not."""
        return self.minimum is not StaffRole.CASHIER

    def security_scheme(self) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "Staff session token from POST /api/staff/login.",
        }

    def describe(self) -> str:
        return f"Needs a staff session with role {self.minimum.value} or higher (cashier < manager < admin)"

    async def resolve(self, request: web.Request, path: Any) -> Principal:
        session = await _session(request, SessionKind.STAFF)
        account = await staff_account(session.merchant_id, session.subject_id)
        if account is None or not account[0].active:
            raise unauthorized("账号已停用，请联系管理员")
        staff, merchant = account
        if session_epoch(session) != staff.session_epoch:  # issued before a password reset
            raise unauthorized("登录已失效，请重新登录")
        if not has_role(staff.role, self.minimum):
            raise ApiError(403, ErrorCode.FORBIDDEN, f"需要{ROLE_NAMES[self.minimum]}及以上权限")
        return Principal(merchant=merchant, session=session, staff=staff)


MEMBER = MemberAuth()
MEMBER_SESSION = MemberAuth(reads_member=False)  # a hot path that reads the member only when it must
# The same, for a handler that reads the session in a round trip of its own (the flash-sale gate).
MEMBER_SESSION_DEFERRED = MemberAuth(reads_member=False, deferred=True)
CASHIER = StaffAuth(StaffRole.CASHIER)
MANAGER = StaffAuth(StaffRole.MANAGER)
ADMIN = StaffAuth(StaffRole.ADMIN)


async def rate_limit(request: web.Request, scope: str, subject: str, *, limit: int, window: int) -> None:
    """At most `limit` attempts per client IP and subject in a fixed `window` of seconds, else 429."""
    raw = f"{request.remote or '-'}|{subject}".encode()
    key = f"rl:{scope}:{hashlib.sha256(raw).hexdigest()[:32]}"
    redis = request.app[REDIS]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, window, nx=True)
        pipe.ttl(key)
        count, _, ttl = await pipe.execute()
    if int(count) > limit:
        retry = max(int(ttl), 1)
        raise ApiError(
            429,
            ErrorCode.RATE_LIMITED,
            f"尝试过于频繁，请 {retry} 秒后再试",
            headers={"Retry-After": str(retry)},
        )
