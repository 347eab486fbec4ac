"""Request id binding and access logging."""

from __future__ import annotations

import contextvars
import itertools
import logging
import secrets
import time

from aiohttp import web

from webhooks.errors import Handler

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
log = logging.getLogger("memberbot.access")
# A request id is this process's random prefix and a counter (16 hex digits): unique across processes
# and hosts without a call for random bytes (a system call) on every request.
_PROCESS = secrets.token_hex(4)
_SEQUENCE = itertools.count(1)


def new_request_id() -> str:
    return f"{_PROCESS}{next(_SEQUENCE) & 0xFFFFFFFF:08x}"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id", "")[:64] or new_request_id()
    token = request_id.set(rid)
    started = time.perf_counter()
    try:
        response = await handler(request)
        response.headers["X-Request-Id"] = rid
        if response.status >= 500 or log.isEnabledFor(logging.DEBUG):
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        return response
    finally:
        request_id.reset(token)
