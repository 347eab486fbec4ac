"""Map domain errors and HTTP exceptions to `{"error": {"code", "message"}}` with the right status."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pydantic
from aiohttp import web
from tortoise import exceptions as tortoise_exceptions

from handlers.core.errors import DomainError, ErrorCode

log = logging.getLogger(__name__)

STATUS: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION: 400,
    ErrorCode.BAD_MESSAGE: 400,
    ErrorCode.CARD_EXPIRED: 400,
    ErrorCode.CARD_INVALID: 400,
    ErrorCode.STALE_TIMESTAMP: 403,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.BAD_SIGNATURE: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.MERCHANT_NOT_FOUND: 404,
    ErrorCode.MEMBER_NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.COUPON_NOT_FOUND: 404,
    ErrorCode.COUPON_TEMPLATE_NOT_FOUND: 404,
    ErrorCode.COUPON_USED: 409,
    ErrorCode.COUPON_EXPIRED: 409,
    ErrorCode.COUPON_NOT_APPLICABLE: 409,
    ErrorCode.COUPON_REVOKED: 409,
    ErrorCode.COUPON_TEMPLATE_INACTIVE: 409,
    ErrorCode.COUPON_OUT_OF_STOCK: 409,
    ErrorCode.COUPON_LIMIT_REACHED: 409,
    ErrorCode.IDEMPOTENCY_MISMATCH: 409,
    ErrorCode.INSUFFICIENT_POINTS: 409,
    ErrorCode.INSUFFICIENT_BALANCE: 409,
    ErrorCode.SERVICE_CARD_EXHAUSTED: 409,
    ErrorCode.SERVICE_CARD_EXPIRED: 409,
    ErrorCode.SERVICE_CARD_NOT_STARTED: 409,
    ErrorCode.SERVICE_CARD_REVOKED: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.LOCKED: 423,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.WECHAT_ERROR: 502,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}

_HTTP_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.VALIDATION,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.VALIDATION,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
}


def error_response(
    status: int, code: str, message: str, *, field: str | None = None, headers: Any = None
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return web.json_response({"error": body}, status=status, headers=headers)


def _pydantic_response(exc: pydantic.ValidationError) -> web.Response:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    return error_response(
        400, ErrorCode.VALIDATION, f"{field}: {first['msg']}" if field else first["msg"], field=field
    )


M = TypeVar("M", bound=pydantic.BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as exc:
        return error_response(STATUS.get(exc.code, 400), exc.code, exc.message, field=exc.field)
    except pydantic.ValidationError as exc:
        return _pydantic_response(exc)
    except tortoise_exceptions.ValidationError as exc:  # a value no column can hold, e.g. an over-long code
        log.warning("value refused by a model field", extra={"error": type(exc).__name__})  # not the value
        return error_response(400, ErrorCode.VALIDATION, "a value is too long or not allowed")
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = _HTTP_CODES.get(exc.status, ErrorCode.VALIDATION if exc.status < 500 else ErrorCode.INTERNAL)
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, code, exc.reason, headers=headers)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(500, ErrorCode.INTERNAL, "internal error")


MAX_JSON_DEPTH = 32  # no request memberbot accepts nests deeper than a handful of levels


async def json_body(request: web.Request) -> Any:
    """The request's JSON body, or a 400 naming what is wrong with it (never a 500: a body nested
    thousands deep is refused before the parser recurses into it)."""
    raw = await request.read()
    if _nesting(raw) > MAX_JSON_DEPTH:
        raise DomainError(
            f"请求体嵌套过深（不超过 {MAX_JSON_DEPTH} 层）", code=ErrorCode.VALIDATION, field="body"
        )
    try:
        return json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise DomainError("请求体不是有效的 JSON", code=ErrorCode.VALIDATION, field="body") from None


def _nesting(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets inside strings ignored)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:  # the common case, at C speed
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Validate the JSON body against a pydantic model; errors become 400 with the failing field."""
    return model.model_validate(await json_body(request))
