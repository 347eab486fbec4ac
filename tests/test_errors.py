"""The error middleware: every failure is the JSON envelope with the right status, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

import pydantic
from aiohttp import web
from tortoise.exceptions import ValidationError as FieldValidationError

from handlers.core.errors import Conflict, NotFound
from webhooks.errors import error_middleware


class Body(pydantic.BaseModel):
    amount: int


async def fail(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    if kind == "field":
        raise FieldValidationError("code: Length of 'x' 17 > 16")
    if kind == "pydantic":
        Body.model_validate({"amount": "many"})
    if kind == "conflict":
        raise Conflict("已经退款", field="purchase")
    if kind == "missing":
        raise NotFound("没有这笔消费")
    raise RuntimeError("secret internals")


async def test_each_failure_maps_to_its_status_and_envelope(aiohttp_client: Any) -> None:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/{kind}", fail)
    client = await aiohttp_client(app)
    expected = {
        "field": (400, "validation_error"),
        "pydantic": (400, "validation_error"),
        "conflict": (409, "conflict"),
        "missing": (404, "not_found"),
        "boom": (500, "internal_error"),
    }
    for kind, (status, code) in expected.items():
        response = await client.get(f"/{kind}")
        body = await response.json()
        assert (response.status, body["error"]["code"]) == (status, code), kind
        assert "secret internals" not in await response.text()
    assert (await (await client.get("/pydantic")).json())["error"]["field"] == "amount"


async def test_deeply_nested_json_is_a_400_on_every_json_endpoint(client: Any, caplog: Any) -> None:
    """6 KB of brackets once made every JSON endpoint (login included) answer 500 with a traceback."""
    nested = "[" * 3000 + "]" * 3000
    for path in ("/api/staff/login", "/api/mp/demo/login", "/api/staff/purchases"):
        with caplog.at_level(logging.WARNING):
            response = await client.post(path, data=nested, headers={"Content-Type": "application/json"})
        body = await response.json()
        assert response.status in (400, 401), (path, body)
        if response.status == 400:
            assert body["error"]["code"] == "validation_error" and body["error"]["field"] == "body"
            assert "嵌套" in body["error"]["message"]
    assert not [r for r in caplog.records if r.exc_info], "no traceback is logged"
    quoted = '{"username": "' + "[" * 3000 + '"}'  # brackets inside a string are not nesting
    response = await client.post(
        "/api/staff/login", data=quoted, headers={"Content-Type": "application/json"}
    )
    assert (await response.json())["error"]["field"] != "body"
