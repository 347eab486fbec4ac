"""The request id every response carries (and every log line of the request)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from webhooks.middlewares import new_request_id, request_id, request_id_middleware


def echo_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=request_id.get())

    app = web.Application(middlewares=[request_id_middleware])
    app.router.add_get("/", handler)
    return app


async def test_each_request_gets_its_own_id_and_a_callers_id_is_kept(aiohttp_client: Any) -> None:
    client = await aiohttp_client(echo_app())
    ids = []
    for _ in range(3):
        response = await client.get("/")
        ids.append(response.headers["X-Request-Id"])
        assert await response.text() == ids[-1]  # the id the request's logging sees
    assert len(set(ids)) == 3 and all(re.fullmatch(r"[0-9a-f]{16}", rid) for rid in ids)
    given = await client.get("/", headers={"X-Request-Id": "lb-1234"})
    assert given.headers["X-Request-Id"] == "lb-1234" and await given.text() == "lb-1234"


def test_ids_do_not_repeat_within_a_process() -> None:
    assert len({new_request_id() for _ in range(10_000)}) == 10_000
