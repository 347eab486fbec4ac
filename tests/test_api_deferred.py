"""An endpoint whose handler authenticates its caller itself (a deferred scheme, `Call.authenticate`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers.core.errors import NotFound
from webhooks.api import Call, In, Out, Routes, mount
from webhooks.auth import MEMBER_SESSION_DEFERRED
from webhooks.errors import error_middleware


class BodyIn(In):
    n: int


class DoneOut(Out):
    ok: bool


def deferred_app() -> web.Application:
    routes = Routes("deferred")

    @routes.post("/forgets", body=BodyIn, response=DoneOut, auth=MEMBER_SESSION_DEFERRED)
    async def forgets(call: Call[BodyIn, None]) -> DoneOut:
        """Returns without authenticating."""
        return DoneOut(ok=True)

    @routes.post("/fails", body=BodyIn, response=DoneOut, auth=MEMBER_SESSION_DEFERRED, errors=(404,))
    async def fails(call: Call[BodyIn, None]) -> DoneOut:
        """Fails before authenticating."""
        raise NotFound("没有这个东西")

    app = web.Application(middlewares=[error_middleware])
    mount(app, routes)
    return app


async def test_a_deferred_handler_cannot_answer_without_authenticating(aiohttp_client: Any) -> None:
    client = await aiohttp_client(deferred_app())
    forgot = await client.post("/forgets", json={"n": 1})
    assert forgot.status == 500 and (await forgot.json())["error"]["code"] == "internal_error"


async def test_an_unauthenticated_caller_of_a_deferred_endpoint_learns_nothing_but_401(
    aiohttp_client: Any,
) -> None:
    client = await aiohttp_client(deferred_app())
    for body in ({"n": 1}, {"n": "x"}, {"n": 1, "extra": True}):
        failed = await client.post("/fails", json=body)
        assert failed.status == 401, body
        assert (await failed.json())["error"]["code"] == "unauthorized"
        assert failed.headers["WWW-Authenticate"].startswith("Bearer")
