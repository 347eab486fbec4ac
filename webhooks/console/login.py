"""Console login and logout: the staff API's argon2 check and per-account lockout, a session cookie."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from aiohttp import web

from handlers.core.errors import Unauthorized
from handlers.staff import auth as staff_auth
from handlers.staff.sessions import STAFF_TTL_SECONDS, SessionKind
from models.merchant import Merchant
from models.staff import StaffRole
from webhooks.api import ApiError
from webhooks.auth import rate_limit
from webhooks.console import security
from webhooks.console.base import CSRF_REFUSED, error_page, form, redirect, render

LOGIN_ATTEMPTS = 20  # per IP and account in the window, as the staff API's login
LOGIN_WINDOW_SECONDS = 600
FIELDS = ("merchant", "username", "password")
LABELS = {"merchant": "商户编号", "username": "用户名", "password": "密码"}


def _next(raw: str | None) -> str:
    """Where to go after logging in: a console path only (never another site)."""
    if raw and raw.startswith("/admin") and not raw.startswith("/admin/login") and "\\" not in raw:
        return raw
    return "/admin/"


async def login_page(request: web.Request) -> web.StreamResponse:
    if await security.console_of(request) is not None:
        return redirect(request, _next(request.query.get("next")))
    anchor = request.cookies.get(security.PRE_COOKIE, "")
    fresh = len(anchor) < security.PRE_MIN_LENGTH
    if fresh:
        anchor = security.new_anchor()
    page = _form_page(request, anchor, {}, {}, next_url=_next(request.query.get("next")))
    if fresh:
        security.set_cookie(request, page, security.PRE_COOKIE, anchor, security.PRE_TTL_SECONDS)
    return page


def _form_page(
    request: web.Request,
    anchor: str,
    values: dict[str, str],
    errors: dict[str, str],
    *,
    next_url: str,
    status: int = 200,
) -> web.Response:
    context = {
        "values": values,
        "errors": errors,
        "next": next_url,
        "login_csrf": security.csrf_token(request, anchor),
    }
    return render(request, "login.html", None, context, status=status)


async def login_submit(request: web.Request) -> web.StreamResponse:
    data = await form(request)
    anchor = request.cookies.get(security.PRE_COOKIE, "")
    if not security.csrf_ok(request, anchor, data.get(security.CSRF_FIELD)):
        return error_page(request, None, 403, CSRF_REFUSED)
    values = {name: data.get(name, "").strip() for name in ("merchant", "username")}
    next_url = _next(data.get("next"))
    errors = {name: f"请填写{LABELS[name]}" for name in FIELDS if not data.get(name, "").strip()}
    if errors:
        return _form_page(request, anchor, values, errors, next_url=next_url, status=400)
    password = data["password"]
    try:
        await rate_limit(
            request,
            "staff-login",
            f"{values['merchant']}|{values['username'].lower()}",
            limit=LOGIN_ATTEMPTS,
            window=LOGIN_WINDOW_SECONDS,
        )
        now = datetime.now(UTC)
        staff = await staff_auth.authenticate(values["merchant"], values["username"], password, now=now)
    except ApiError as exc:  # too many attempts from this address
        return _form_page(
            request, anchor, values, {"form": exc.message}, next_url=next_url, status=exc.status
        )
    except staff_auth.AccountLocked as exc:
        message = await _locked_message(values["merchant"], exc.until)
        return _form_page(request, anchor, values, {"form": message}, next_url=next_url, status=423)
    except Unauthorized as exc:
        return _form_page(request, anchor, values, {"password": exc.message}, next_url=next_url, status=401)
    if not staff_auth.has_role(staff.role, StaffRole.MANAGER):
        message = "收银员账号不能登录管理后台，请使用店长或管理员账号"
        return _form_page(request, anchor, values, {"username": message}, next_url=next_url, status=403)
    issued = await security.store(request).issue(
        SessionKind.STAFF,
        staff.merchant_id,
        staff.id,
        data={"epoch": str(staff.session_epoch), "console": "1"},
    )
    response = web.Response(status=303, headers={"Location": next_url})
    security.set_cookie(request, response, security.SESSION_COOKIE, issued.token, STAFF_TTL_SECONDS)
    security.forget_cookie(response, security.PRE_COOKIE)
    return response


async def _locked_message(slug: str, until: datetime) -> str:
    merchant = await Merchant.get_or_none(slug=slug)
    zone = ZoneInfo(merchant.timezone if merchant is not None else "Asia/Shanghai")
    return f"连续多次密码错误，账号已锁定，请于 {until.astimezone(zone).strftime('%H:%M')} 后再试"


async def logout(request: web.Request) -> web.StreamResponse:
    """Ends the session (revoked in Redis, the cookie deleted); refused without the CSRF token."""
    console = await security.console_of(request)
    token = request.cookies.get(security.SESSION_COOKIE, "")
    data = await form(request)
    presented = request.headers.get(security.CSRF_HEADER) or data.get(security.CSRF_FIELD)
    if token and not security.csrf_ok(request, token, presented):
        return error_page(request, console, 403, CSRF_REFUSED)
    if token:
        await security.store(request).revoke(token)
    response = web.Response(status=303, headers={"Location": "/admin/login"})
    security.forget_cookie(response, security.SESSION_COOKIE)
    return response
