"""The error middleware: every failure is the JSON envelope with the right status, never a traceback."""

from __future__ import annotations

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
