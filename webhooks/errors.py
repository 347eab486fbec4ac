"""Map domain errors and HTTP exceptions to `{"error": {"code", "message"}}` with the right status."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import pydantic
from aiohttp import web
from tortoise import exceptions as tortoise_exceptions

from handlers.core.errors import DomainError, ErrorCode
from handlers.wechat.errors import WeChatError

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
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.MERCHANT_NOT_FOUND: 404,
    ErrorCode.MEMBER_NOT_FOUND: 404,
    ErrorCode.MEMBER_BLOCKED: 409,
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
    ErrorCode.CREDIT_LIMIT_EXCEEDED: 409,
    ErrorCode.CREDIT_BELOW_OWED: 409,
    ErrorCode.CREDIT_OVERPAID: 409,
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
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
}
# What an aiohttp HTTP exception says to the caller (its English reason phrase never reaches them).
_HTTP_MESSAGES: dict[int, str] = {
    400: "请求无效",
    401: "请先登录",
    403: "没有权限执行此操作",
    404: "接口不存在，请检查请求地址",
    406: "无法提供所请求的内容格式",
    408: "请求超时，请重试",
    409: "请求与当前状态冲突",
    411: "请求缺少 Content-Length",
    414: "请求地址过长",
    415: "不支持的请求内容类型，请使用 application/json",
    429: "请求过于频繁，请稍后再试",
    431: "请求头过大",
}
INTERNAL_MESSAGE = "服务器内部错误，请稍后再试"


def error_response(
    status: int, code: str, message: str, *, field: str | None = None, headers: Any = None
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return web.json_response({"error": body}, status=status, headers=headers)


# Pydantic's error types, as Simplified Chinese sentences naming the field (`{field}`, the dotted location
# such as `items.0.qty`) and, where the error has them, its limits (the keys of the error's `ctx`).
_INTEGER = "{field} 须为整数"
_NUMBER = "{field} 须为数字"
_BOOLEAN = "{field} 须为 true 或 false"
_DATE = "{field} 须为日期，如 2024-05-20"
_DATETIME = "{field} 须为带时区的日期时间，如 2024-05-20T10:00:00+08:00"
_OBJECT = "{field} 须为 JSON 对象"
_URL = "{field} 须为有效的网址"
_ONE_OF = "{field} 须为以下之一：{expected}"
PYDANTIC_MESSAGES: dict[str, str] = {
    "missing": "缺少必填字段 {field}",
    "extra_forbidden": "不支持字段 {field}，请删除后重试",
    "int_parsing": _INTEGER,
    "int_type": _INTEGER,
    "int_from_float": _INTEGER,
    "int_parsing_size": "{field} 超出整数范围",
    "float_parsing": _NUMBER,
    "float_type": _NUMBER,
    "decimal_parsing": _NUMBER,
    "decimal_type": _NUMBER,
    "finite_number": "{field} 须为有限的数字",
    "greater_than_equal": "{field} 不能小于 {ge}",
    "less_than_equal": "{field} 不能大于 {le}",
    "greater_than": "{field} 须大于 {gt}",
    "less_than": "{field} 须小于 {lt}",
    "multiple_of": "{field} 须为 {multiple_of} 的倍数",
    "string_too_short": "{field} 至少 {min_length} 个字符",
    "string_too_long": "{field} 最多 {max_length} 个字符",
    "string_type": "{field} 须为字符串",
    "string_pattern_mismatch": "{field} 格式不正确（不能包含换行等控制字符，或含有不允许的字符）",
    "string_unicode": "{field} 须为有效的 UTF-8 文本",
    "bool_type": _BOOLEAN,
    "bool_parsing": _BOOLEAN,
    "literal_error": _ONE_OF,
    "enum": _ONE_OF,
    "json_invalid": "{field} 不是有效的 JSON",
    "json_type": "{field} 须为 JSON 文本",
    "date_type": _DATE,
    "date_parsing": _DATE,
    "date_from_datetime_parsing": _DATE,
    "date_from_datetime_inexact": "{field} 须为日期（不带时间），如 2024-05-20",
    "datetime_type": _DATETIME,
    "datetime_parsing": _DATETIME,
    "datetime_from_date_parsing": _DATETIME,
    "datetime_object_invalid": _DATETIME,
    "timezone_aware": "{field} 须带时区，如 2024-05-20T10:00:00+08:00",
    "timezone_naive": "{field} 不能带时区",
    "too_long": "{field} 最多 {max_length} 项",
    "too_short": "{field} 至少 {min_length} 项",
    "list_type": "{field} 须为数组",
    "tuple_type": "{field} 须为数组",
    "set_type": "{field} 须为数组",
    "dict_type": _OBJECT,
    "model_type": _OBJECT,
    "model_attributes_type": _OBJECT,
    "url_type": _URL,
    "url_parsing": _URL,
    "url_syntax_violation": _URL,
    "url_too_long": "{field} 网址过长",
    "url_scheme": _URL,
    "none_required": "{field} 须为 null",
    "value_error": "{field} 的值无效",
    "assertion_error": "{field} 的值无效",
}
PYDANTIC_FALLBACK = "{field} 的值无效"
BODY = "请求体"  # how a message names the body itself (an error at the empty location)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def pydantic_message(error: Mapping[str, Any]) -> str:
    """One pydantic error (from `ValidationError.errors()`) as a Simplified Chinese sentence."""
    kind = str(error.get("type", ""))
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    field = ".".join(str(part) for part in error.get("loc", ())) or BODY
    if kind in ("value_error", "assertion_error"):
        # A validator's own ValueError speaks to the caller when it is Chinese; anything else (a library's
        # English text) is replaced by the generic sentence.
        detail = str(ctx.get("error", ""))
        if _CJK.search(detail):
            return detail if field == BODY else f"{field}：{detail}"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return f"{field} 不能为空"
    if "expected" in ctx:
        ctx["expected"] = _choices(str(ctx["expected"]))
    template = PYDANTIC_MESSAGES.get(kind, PYDANTIC_FALLBACK)
    try:
        message = template.format_map({**ctx, "field": field})
    except (KeyError, IndexError, ValueError):  # a ctx without the limit this sentence names
        message = PYDANTIC_FALLBACK.format(field=field)
    return message.replace(f"{BODY} ", BODY, 1) if field == BODY else message  # no space between CJK


def _choices(expected: str) -> str:
    """pydantic's "'cash', 'card' or 'other'" as 「cash、card、other」."""
    quoted = re.findall(r"'((?:[^'\\]|\\.)*)'", expected)
    parts = quoted or [part for part in re.split(r", | or ", expected) if part]
    return "、".join(parts)


def _pydantic_response(exc: pydantic.ValidationError) -> web.Response:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    return error_response(400, ErrorCode.VALIDATION, pydantic_message(first), field=field)


def http_message(exc: web.HTTPException, request: web.Request) -> str:
    """A Simplified Chinese message for an aiohttp HTTP exception (404, 405, 413, …)."""
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = "、".join(sorted(exc.allowed_methods))
        return f"该接口不支持 {exc.method} 请求（可用：{allowed}）"
    if exc.status == 413:
        return f"请求体过大（不能超过 {max(request.client_max_size // 1024, 1)} KB）"
    if exc.status in _HTTP_MESSAGES:
        return _HTTP_MESSAGES[exc.status]
    return f"请求无法处理（HTTP {exc.status}）" if exc.status < 500 else "服务暂时不可用，请稍后再试"


M = TypeVar("M", bound=pydantic.BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as exc:
        if isinstance(exc, WeChatError):  # WeChat's errcode and errmsg are for the log, never the caller
            log.warning("wechat refused a call", extra={"path": request.path, **exc.log_fields()})
        return error_response(STATUS.get(exc.code, 400), exc.code, exc.message, field=exc.field)
    except pydantic.ValidationError as exc:
        return _pydantic_response(exc)
    except tortoise_exceptions.ValidationError as exc:  # a value no column can hold, e.g. an over-long code
        log.warning("value refused by a model field", extra={"error": type(exc).__name__})  # not the value
        return error_response(400, ErrorCode.VALIDATION, "某个值过长或不符合要求，请检查后重试")
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = _HTTP_CODES.get(exc.status, ErrorCode.VALIDATION if exc.status < 500 else ErrorCode.INTERNAL)
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, code, http_message(exc, request), headers=headers)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(500, ErrorCode.INTERNAL, INTERNAL_MESSAGE)


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
