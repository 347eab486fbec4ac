"""Request id binding and access logging."""

from __future__ import annotations

import contextvars
import logging
import secrets
import time

from aiohttp import web

from webhooks.errors import Handler

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
log = logging.getLogger("memberbot.access")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
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
