"""The endpoint registry every JSON endpoint registers through.

A `Routes` table records, for each route, its pydantic request body (JSON, or a multipart `form` with file
uploads, `webhooks.forms`), path and query models, its response model (or the content types of a
non-JSON body) and success status, its auth scheme (with the minimum staff role) and the error statuses
it may answer. `mount` adds the routes to the app wrapped in one adapter that enforces exactly those
declarations (path → auth → query → body → handler → response), and keeps the list under the
`ENDPOINTS` app key, from which `webhooks.openapi` generates the document. Declaration and behaviour
therefore cannot drift apart.

    routes = Routes("staff")

    @routes.post("/api/staff/login", body=LoginIn, response=LoginOut, errors=(401, 423, 429))
    async def login(call: Call[LoginIn, None]) -> LoginOut: ...
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Generic, Protocol, TypeVar

import pydantic
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from handlers.core import config_cache
from handlers.core.errors import ErrorCode
from handlers.core.tasks import Effects
from webhooks.appkeys import EFFECTS, REDIS
from webhooks.errors import error_response, parse_body
from webhooks.forms import Upload, parse_form

if TYPE_CHECKING:
    from handlers.staff.sessions import Session
    from models.member import Member
    from models.merchant import Merchant
    from models.staff import Staff

log = logging.getLogger(__name__)
B = TypeVar("B")
P = TypeVar("P")
Result = BaseModel | web.StreamResponse | None
Handler = Callable[["Call[Any, Any]"], Awaitable[Result]]
H = TypeVar("H", bound=Handler)

# Reusable string constraints for request models. PostgreSQL refuses NUL characters in text, so every
# string excludes them; single-line fields exclude all control characters.
Line = Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]*$")]
# Ids bounded by their column, so an oversized id is a 400, never a database range error:
# `IntId` for int4 primary keys (merchant, member, mall item, coupon template, …), `BigId` for bigint ones.
IntId = Annotated[int, Field(ge=1, le=2**31 - 1)]
BigId = Annotated[int, Field(ge=1, le=2**63 - 1)]
Multiline = Annotated[str, Field(pattern=r"^[^\x00]*$")]


class In(BaseModel):
    """Base for request bodies and path parameters: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """Base for response bodies."""

    model_config = ConfigDict(extra="forbid")


class ApiError(Exception):
    """An HTTP error decided at the door (auth, rate limit, lockout), with optional response headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, field=self.field, headers=self.headers)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the session and the member or staff it belongs to, within one merchant."""

    merchant: Merchant
    session: Session
    member: Member | None = None
    staff: Staff | None = None


class AuthScheme(Protocol):
    """How an endpoint authenticates; `webhooks.auth` provides the member and staff schemes."""

    @property
    def scheme_name(self) -> str: ...
    @property
    def statuses(self) -> tuple[int, ...]: ...
    def security_scheme(self) -> dict[str, Any]: ...
    def describe(self) -> str: ...
    @property
    def announces(self) -> bool:
        """Whether a successful change through this scheme announces a configuration change."""
        ...

    @property
    def deferred(self) -> bool:
        """Whether the handler authenticates itself (`Call.authenticate`), e.g. in a round trip it makes
        anyway. The adapter then resolves the caller before any error escapes and refuses a handler that
        returns without having authenticated."""
        ...

    async def resolve(self, request: web.Request, path: Any) -> Principal: ...


@dataclass(slots=True)
class Call(Generic[B, P]):
    """What a handler receives: the validated body and path parameters and the authenticated caller."""

    request: web.Request
    body: B
    path: P
    principal: Principal | None
    query: Any = None  # the validated query model, when the endpoint declares one
    resolver: Callable[[], Awaitable[Principal]] | None = None  # a deferred scheme's `resolve`

    async def authenticate(self) -> Principal:
        """The caller, resolved now by the endpoint's scheme unless the handler already did."""
        if self.principal is None and self.resolver is not None:
            self.principal = await self.resolver()
        return self._principal()

    def authenticated(self, principal: Principal) -> None:
        """A deferred endpoint's handler authenticated the caller itself."""
        self.principal = principal

    @property
    def merchant(self) -> Merchant:
        return self._principal().merchant

    @property
    def effects(self) -> Effects:
        """The durable side effects registry (`handlers.effects`), for use cases that queue them."""
        return self.request.app[EFFECTS]

    @property
    def session(self) -> Session:
        return self._principal().session

    @property
    def member(self) -> Member:
        member = self._principal().member
        if member is None:
            raise RuntimeError("this endpoint does not authenticate a member")
        return member

    @property
    def staff(self) -> Staff:
        staff = self._principal().staff
        if staff is None:
            raise RuntimeError("this endpoint does not authenticate staff")
        return staff

    def _principal(self) -> Principal:
        if self.principal is None:
            raise RuntimeError("this endpoint declares no authentication")
        return self.principal


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    path_model: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: AuthScheme | None = None
    errors: tuple[int, ...] = ()
    alternatives: Mapping[int, type[BaseModel]] = field(default_factory=dict)
    # The content type of a non-JSON success body (e.g. image/png), or the types it may be (a file
    # exported as CSV or XLSX).
    media: str | tuple[str, ...] | None = None
    form: type[BaseModel] | None = None  # a multipart/form-data body (file uploads) instead of JSON
    body_required: bool = True  # False: an empty request body reads as `{}`

    def error_statuses(self) -> tuple[int, ...]:
        """Declared error statuses plus those the adapter itself can answer."""
        implied: set[int] = set(self.errors)
        if self.body is not None or self.form is not None:
            implied |= {400, 413}
        if self.query is not None:
            implied.add(400)
        if self.path_model is not None:
            implied.add(404)
        if self.auth is not None:
            implied |= set(self.auth.statuses)
        return tuple(sorted(implied))

    def media_types(self) -> tuple[str, ...]:
        return (self.media,) if isinstance(self.media, str) else self.media or ()

    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


class Routes:
    """One module's table of endpoints (its `tag` groups them in the document)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str = "",
        body: type[BaseModel] | None = None,
        path_model: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int | None = None,
        auth: AuthScheme | None = None,
        errors: tuple[int, ...] = (),
        alternatives: Mapping[int, type[BaseModel]] | None = None,
        media: str | tuple[str, ...] | None = None,
        form: type[BaseModel] | None = None,
        body_required: bool = True,
    ) -> Callable[[H], H]:
        def register(handler: H) -> H:
            endpoint = Endpoint(
                method=method.upper(),
                path=path,
                handler=handler,
                operation_id=f"{self.tag}_{handler.__name__}",
                summary=summary or _first_line(handler.__doc__) or handler.__name__,
                tag=self.tag,
                body=body,
                path_model=path_model,
                query=query,
                response=response,
                status=status if status is not None else (200 if response or media else 204),
                auth=auth,
                errors=errors,
                alternatives=dict(alternatives or {}),
                media=media,
                form=form,
                body_required=body_required,
            )
            _check(endpoint)
            self.endpoints.append(endpoint)
            return handler

        return register

    def get(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route("POST", path, **options)

    def put(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route("PUT", path, **options)

    def patch(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route("PATCH", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route("DELETE", path, **options)


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _check(endpoint: Endpoint) -> None:
    params = set(endpoint.path_params())
    declared = set(endpoint.path_model.model_fields) if endpoint.path_model is not None else set()
    if params != declared:
        raise ValueError(f"{endpoint.method} {endpoint.path}: the path model must declare {sorted(params)}")
    if endpoint.body is not None and endpoint.form is not None:
        raise ValueError(f"{endpoint.method} {endpoint.path}: a JSON body or a form, not both")
    if endpoint.auth is not None and endpoint.auth.deferred and endpoint.form is not None:
        raise ValueError(f"{endpoint.method} {endpoint.path}: a deferred scheme takes no form")
    if endpoint.media is not None and (endpoint.response is not None or endpoint.status == 204):
        raise ValueError(f"{endpoint.method} {endpoint.path}: a media body has no response model, status 2xx")
    if endpoint.media is None and (endpoint.response is None) != (endpoint.status == 204):
        raise ValueError(f"{endpoint.method} {endpoint.path}: a response model goes with a non-204 status")


ENDPOINTS: web.AppKey[tuple[Endpoint, ...]] = web.AppKey("api_endpoints")


def mount(app: web.Application, *tables: Routes) -> None:
    """Add the tables' routes to the app; each call extends what `webhooks.openapi` documents."""
    endpoints = [endpoint for table in tables for endpoint in table.endpoints]
    known = app.get(ENDPOINTS, ())
    ids = [e.operation_id for e in (*known, *endpoints)]
    if len(ids) != len(set(ids)):
        raise ValueError("duplicate operation ids in the endpoint registry")
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, _adapter(endpoint))
    app[ENDPOINTS] = (*known, *endpoints)


def _adapter(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            path = _path(endpoint, request)
            if endpoint.auth is not None and endpoint.auth.deferred:
                response = await _deferred(endpoint, request, path)
            else:
                response = await _direct(endpoint, request, path)
        except ApiError as exc:
            return exc.response()
        if endpoint.method != "GET" and endpoint.auth is not None and endpoint.auth.announces:
            await _announce(request)
        return response

    handle.__name__ = endpoint.operation_id
    return handle


async def _direct(endpoint: Endpoint, request: web.Request, path: Any) -> web.StreamResponse:
    """Call an endpoint once its caller is authenticated (if it declares a scheme)."""
    principal = await endpoint.auth.resolve(request, path) if endpoint.auth is not None else None
    query = endpoint.query.model_validate(dict(request.query)) if endpoint.query is not None else None
    if endpoint.form is not None:
        return await _with_form(endpoint, request, path, principal, query)
    body = await _body(endpoint, request)
    return _respond(endpoint, await endpoint.handler(Call(request, body, path, principal, query)))


async def _deferred(endpoint: Endpoint, request: web.Request, path: Any) -> web.StreamResponse:
    """Call an endpoint whose handler authenticates itself. Whatever goes wrong before it has, the
    caller is authenticated first, so an unauthenticated caller learns nothing but 401."""
    auth = endpoint.auth
    assert auth is not None

    async def resolve() -> Principal:
        return await auth.resolve(request, path)

    call: Call[Any, Any] = Call(request, None, path, None, resolver=resolve)
    try:
        if endpoint.query is not None:
            call.query = endpoint.query.model_validate(dict(request.query))
        call.body = await _body(endpoint, request)
        result = await endpoint.handler(call)
    except Exception:
        await call.authenticate()
        raise
    if call.principal is None:
        raise RuntimeError(f"{endpoint.operation_id} returned without authenticating its caller")
    return _respond(endpoint, result)


async def _with_form(
    endpoint: Endpoint, request: web.Request, path: Any, principal: Principal | None, query: Any
) -> web.StreamResponse:
    """Call a form endpoint; its uploads are closed when it returns, whatever happened."""
    assert endpoint.form is not None
    form = await parse_form(request, endpoint.form)
    try:
        return _respond(endpoint, await endpoint.handler(Call(request, form, path, principal, query)))
    finally:
        for value in dict(form).values():
            if isinstance(value, Upload):
                value.close()


async def _body(endpoint: Endpoint, request: web.Request) -> Any:
    if endpoint.body is None:
        return None
    if not endpoint.body_required and not (await request.read()).strip():
        return endpoint.body.model_validate({})
    return await parse_body(request, endpoint.body)


async def _announce(request: web.Request) -> None:
    """A manager's or admin's change committed: every process's configuration cache reloads. If Redis
    cannot be told, the change stands and other processes see it within `config_cache.MAX_AGE`."""
    try:
        await config_cache.announce(request.app[REDIS])
    except Exception:
        log.exception("configuration change not announced")


def _path(endpoint: Endpoint, request: web.Request) -> Any:
    if endpoint.path_model is None:
        return None
    try:
        return endpoint.path_model.model_validate(dict(request.match_info))
    except pydantic.ValidationError:
        raise ApiError(404, ErrorCode.NOT_FOUND, "请求的资源不存在") from None


def _respond(endpoint: Endpoint, result: Result) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if endpoint.media is not None:
        raise TypeError(f"{endpoint.operation_id} must return its {endpoint.media} body as a response")
    if result is None:
        if endpoint.response is not None:
            raise TypeError(f"{endpoint.operation_id} must return {endpoint.response.__name__}")
        return web.Response(status=204)
    if endpoint.response is None or not isinstance(result, endpoint.response):
        raise TypeError(f"{endpoint.operation_id} returned {type(result).__name__}, not its declared model")
    return web.Response(
        body=result.model_dump_json().encode(), status=endpoint.status, content_type="application/json"
    )
