"""What every console page shares: the login check, the CSRF check on POST, rendering, errors.

A view is `async def view(request, console) -> web.StreamResponse`, wrapped by `page()`: a request
without a console session is sent to the login page (htmx requests get `HX-Redirect`), a POST without
the right CSRF token is refused with 403, a manager opening an admin page gets 403, and a domain error
the view does not handle itself becomes an HTML error page with its status. After a successful POST
every process's configuration cache is told (`handlers.core.config_cache`), as the JSON API does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp_jinja2
import pydantic
from aiohttp import web

from handlers.core import config_cache
from handlers.core.errors import DomainError, ErrorCode
from handlers.staff.auth import has_role
from models.staff import StaffRole
from webhooks.api import ENDPOINTS, ApiError, Call, Principal
from webhooks.appkeys import REDIS
from webhooks.console import security
from webhooks.console.security import Console
from webhooks.errors import STATUS, pydantic_message

log = logging.getLogger(__name__)
M = TypeVar("M", bound=pydantic.BaseModel)
T = TypeVar("T")
View = Callable[[web.Request, Console], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Attempt = Callable[[], Awaitable[web.StreamResponse]]
Refusal = Callable[[dict[str, str]], Awaitable[web.StreamResponse]]

ROLE_NAMES = {"cashier": "收银员", "manager": "店长", "admin": "管理员"}
NAV = (
    ("dashboard", "/admin/", "概览"),
    ("members", "/admin/members", "会员"),
    ("segments", "/admin/segments", "标签与人群"),
    ("programme", "/admin/programme", "会员方案"),
    ("coupons", "/admin/coupons", "优惠券"),
    ("campaigns", "/admin/campaigns", "营销活动"),
    ("analytics", "/admin/analytics", "数据分析"),
    ("credit", "/admin/credit/settings", "赊账与邀请"),
    ("org", "/admin/stores", "门店与员工"),
    ("audit", "/admin/audit", "操作日志"),
)
CSRF_REFUSED = "请求缺少有效的安全令牌（CSRF），已拒绝。请刷新页面后重试。"


def render(
    request: web.Request,
    template: str,
    console: Console | None,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    section: str = "",
) -> web.Response:
    anchor = console.token if console is not None else request.cookies.get(security.PRE_COOKIE, "")
    values = {
        "console": console,
        "csrf": security.csrf_token(request, anchor) if anchor else "",
        "nav": NAV,
        "section": section,
        "role_names": ROLE_NAMES,
        **(context or {}),
    }
    return aiohttp_jinja2.render_template(template, request, values, status=status)


def error_page(request: web.Request, console: Console | None, status: int, message: str) -> web.Response:
    return render(request, "error.html", console, {"status": status, "message": message}, status=status)


def redirect(request: web.Request, location: str) -> web.Response:
    """303 to `location`; an htmx request is told to navigate there instead of swapping the answer in."""
    if request.headers.get("HX-Request") == "true":
        return web.Response(status=204, headers={"HX-Redirect": location})
    return web.Response(status=303, headers={"Location": location})


async def presented_csrf(request: web.Request) -> str | None:
    """The token a POST presents: the htmx header, the action URL's `csrf_token` (a multipart upload,
    whose body is not read before the check), or the urlencoded form's field."""
    presented = request.headers.get(security.CSRF_HEADER) or request.query.get(security.CSRF_FIELD)
    if presented:
        return presented
    if request.content_type == "application/x-www-form-urlencoded":
        value = (await request.post()).get(security.CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def form(request: web.Request) -> dict[str, str]:
    """The urlencoded form's text fields (the last value of a repeated name)."""
    data = await request.post()
    return {name: value for name, value in data.items() if isinstance(value, str)}


def page(minimum: StaffRole = StaffRole.MANAGER) -> Callable[[View], Handler]:
    def wrap(view: View) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            console = await security.console_of(request)
            if console is None:
                target = request.path_qs if request.method == "GET" else "/admin/"
                return redirect(request, f"/admin/login?next={quote(target, safe='')}")
            if request.method == "POST" and not security.csrf_ok(
                request, console.token, await presented_csrf(request)
            ):
                return error_page(request, console, 403, CSRF_REFUSED)
            if not has_role(console.staff.role, minimum):
                return error_page(request, console, 403, f"该页面需要{ROLE_NAMES[minimum.value]}权限")
            try:
                response = await view(request, console)
            except ApiError as exc:
                return error_page(request, console, exc.status, exc.message)
            except DomainError as exc:
                return error_page(request, console, STATUS.get(exc.code, 400), exc.message)
            except pydantic.ValidationError as exc:  # a query an API handler reads itself (`?cursor=`)
                message = pydantic_message(exc.errors(include_url=False)[0])
                return error_page(request, console, 400, message)
            if request.method == "POST" and response.status < 400:
                await _announce(request)
            return response

        handle.__name__ = view.__name__
        handle.__doc__ = view.__doc__
        return handle

    return wrap


async def _announce(request: web.Request) -> None:
    try:
        await config_cache.announce(request.app[REDIS])
    except Exception:
        log.exception("configuration change not announced")


def fen_to_yuan(fen: int | None) -> str:
    if fen is None:
        return "—"
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{cents:02d}"


class FormErrors(Exception):
    """A form that cannot be accepted: a Chinese message per field (`form` for the whole form)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("form refused")
        self.errors = errors

    @classmethod
    def of(cls, exc: DomainError | ApiError) -> FormErrors:
        return cls({exc.field or "form": exc.message})


def parse(model: type[M], data: Mapping[str, Any]) -> M:
    """`data` validated by one of the JSON API's request models; every failing field is named."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors(include_url=False):
            name = ".".join(str(part) for part in error["loc"]) or "form"
            errors.setdefault(name, pydantic_message(error))
        raise FormErrors(errors) from None


async def submit(
    attempt: Attempt,
    refused: Refusal,
    *,
    prefix: str = "",
    passes: Collection[int] = (403,),
) -> web.StreamResponse:
    """Answer a console form: `attempt` parses it, calls `api()` and answers (a redirect, a page); a
    refusal on the way — the form's own (`FormErrors`), the use case's (`DomainError`) or the API's
    (`ApiError`) — becomes `refused(errors)`: each message under its field's name, `prefix.`-ed
    (`form` for the whole form), for the page to show next to the field with the input kept.

    An `ApiError` whose status is in `passes` (403 not allowed; some forms also 404 not found) is raised
    on, for `page()` to answer with its error page."""
    try:
        return await attempt()
    except (FormErrors, DomainError, ApiError) as exc:
        if isinstance(exc, ApiError) and exc.status in passes:
            raise
        found = exc.errors if isinstance(exc, FormErrors) else FormErrors.of(exc).errors
        errors = {f"{prefix}.{key}": message for key, message in found.items()} if prefix else found
        return await refused(errors)


@dataclass(frozen=True, slots=True)
class EditPage(Generic[T]):
    """One thing's edit page: the thing loaded through the API and shown under `name`, its form filled
    with its current values, or — after a refusal — with what was typed and each error by its field."""

    template: str
    section: str
    name: str
    load: Callable[[web.Request, Console], Awaitable[T]]
    values_of: Callable[[T, Console], dict[str, str]]
    extra: Mapping[str, Any] = field(default_factory=dict)

    async def show(
        self,
        request: web.Request,
        console: Console,
        *,
        errors: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
        status: int = 200,
    ) -> web.Response:
        current = await self.load(request, console)
        context = {
            **self.extra,
            self.name: current,
            "errors": errors or {},
            "values": values if values is not None else self.values_of(current, console),
        }
        return render(request, self.template, console, context, status=status, section=self.section)


def present(data: Mapping[str, str], *names: str) -> dict[str, str]:
    """The named form fields that were filled in (an empty input means "not given")."""
    return {name: data[name].strip() for name in names if data.get(name, "").strip()}


async def api(
    request: web.Request,
    console: Console,
    handler: Callable[[Call[Any, Any]], Awaitable[Any]],
    *,
    body: Any = None,
    path: Any = None,
    query: Any = None,
) -> Any:
    """Call a JSON admin endpoint's handler for the console's staff member: the same use case, the
    same validation, and the endpoint's own minimum role (read from the endpoint registry)."""
    endpoint = next((e for e in request.app[ENDPOINTS] if e.handler is handler), None)
    if endpoint is None:
        raise RuntimeError(f"{handler.__name__} is not a registered endpoint")
    minimum = getattr(endpoint.auth, "minimum", None)
    if isinstance(minimum, StaffRole) and not has_role(console.staff.role, minimum):
        raise ApiError(403, ErrorCode.FORBIDDEN, f"需要{ROLE_NAMES[minimum.value]}及以上权限")
    principal = Principal(merchant=console.merchant, session=console.session, staff=console.staff)
    return await handler(Call(request, body, path, principal, query))


def local_time(moment: datetime | None, zone: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored instant in the merchant's time zone."""
    return "—" if moment is None else moment.astimezone(ZoneInfo(zone)).strftime(fmt)


YUAN = re.compile(r"^\d{1,9}(\.\d{1,2})?$")


def yuan_to_fen(raw: str) -> Any:
    """ "12.5" → 1250; anything else is passed on as typed, for the API's model to refuse by name."""
    text = raw.strip()
    if not YUAN.match(text):
        return text
    whole, _, cents = text.partition(".")
    return int(whole) * 100 + int((cents + "00")[:2])


def whole_number(raw: str) -> Any:
    """ "12" → 12; anything else as typed (the API's model names it)."""
    text = raw.strip()
    return int(text) if re.fullmatch(r"-?\d{1,12}", text) else text
