"""The console's door: the session cookie, CSRF tokens and the security headers.

A console login is a staff session of the same store as the API's bearer tokens
(`handlers.staff.sessions`), carried in an HttpOnly cookie instead of a header: deactivating the account
or resetting its password ends it like any other, and the account's session epoch is checked on every
request. Only managers and admins may use the console.

CSRF: every POST carries a token, in the form field `csrf_token` or the `X-CSRF-Token` header (htmx sends
it, `static/console.js`). The token is an HMAC, under the app's secret, of what anchors the browser: the
session token once logged in (session-bound), before that a random pre-login cookie (the login form's
double-submit). A POST without the right token is refused with 403 before anything else is read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

from handlers.staff.accounts import staff_account
from handlers.staff.auth import has_role
from handlers.staff.sessions import Session, SessionKind, SessionStore
from models.merchant import Merchant
from models.staff import Staff, StaffRole
from webhooks.appkeys import REDIS, RUNTIME

SESSION_COOKIE = "mb_console"
PRE_COOKIE = "mb_console_pre"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
PRE_MIN_LENGTH = 32
PRE_TTL_SECONDS = 3600

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class Console:
    """Who is using the console: the session (its token anchors the CSRF token) and the staff member."""

    token: str
    session: Session
    staff: Staff
    merchant: Merchant

    @property
    def actor(self) -> str:
        return f"staff:{self.staff.id}"

    @property
    def is_admin(self) -> bool:
        return has_role(self.staff.role, StaffRole.ADMIN)


def store(request: web.Request) -> SessionStore:
    return SessionStore(request.app[REDIS])


def csrf_token(request: web.Request, anchor: str) -> str:
    secret = request.app[RUNTIME].secret
    return hmac.new(secret, b"console-csrf:" + anchor.encode(), hashlib.sha256).hexdigest()


def csrf_ok(request: web.Request, anchor: str | None, presented: str | None) -> bool:
    if not anchor or not presented:
        return False
    return hmac.compare_digest(csrf_token(request, anchor), presented)


def secure(request: web.Request) -> bool:
    """Cookies are Secure behind https: the request's own scheme, the proxy's X-Forwarded-Proto, or a
    public base URL that is https."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https" or request.app[RUNTIME].base_url.startswith("https://")


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/admin",
        httponly=True,
        samesite="Strict",
        secure=secure(request),
    )


def forget_cookie(response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path="/admin")


def new_anchor() -> str:
    """A pre-login cookie's value: the login form's CSRF token is bound to it."""
    return secrets.token_urlsafe(32)


async def console_of(request: web.Request) -> Console | None:
    """The logged-in manager or admin of this request, or None (no, expired or revoked session)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    session = await store(request).resolve(token)
    if session is None or session.kind is not SessionKind.STAFF or session.data.get("console") != "1":
        return None
    account = await staff_account(session.merchant_id, session.subject_id)
    if account is None:
        return None
    staff, merchant = account
    epoch = session.data.get("epoch", "")
    if not staff.active or not epoch.isdigit() or int(epoch) != staff.session_epoch:
        return None
    if not has_role(staff.role, StaffRole.MANAGER):
        return None
    return Console(token=token, session=session, staff=staff, merchant=merchant)


def add_headers(response: web.StreamResponse) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if response.content_type == "text/html":
        response.headers["Cache-Control"] = "no-store"
