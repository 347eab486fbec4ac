"""The error middleware: every failure is the JSON envelope with the right status, never a traceback."""

from __future__ import annotations

import logging
import re
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal

import pydantic
import pytest
from aiohttp import web
from pydantic import AwareDatetime, ConfigDict, Field, StrictInt, field_validator, model_validator
from tortoise.exceptions import ValidationError as FieldValidationError

from handlers.core.errors import Conflict, NotFound
from tests.support.factories import make_member, make_merchant, staff_headers
from webhooks.errors import error_middleware, pydantic_message

CJK = re.compile(r"[\u4e00-\u9fff]")


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
    messages = {kind: (await (await client.get(f"/{kind}")).json())["error"]["message"] for kind in expected}
    assert messages["pydantic"] == "amount 须为整数"
    assert messages["field"] == "某个值过长或不符合要求，请检查后重试"
    assert messages["boom"] == "服务器内部错误，请稍后再试"


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


class Role(StrEnum):
    CASHIER = "cashier"
    MANAGER = "manager"
    ADMIN = "admin"


class Line(pydantic.BaseModel):
    qty: Annotated[int, Field(ge=1)]


class Sample(pydantic.BaseModel):
    """One field per constraint the request models use."""

    model_config = ConfigDict(extra="forbid")
    required: int
    count: Annotated[int, Field(ge=1, le=10)] = 1
    ratio: Annotated[int, Field(gt=0, lt=100)] = 1
    name: Annotated[str, Field(min_length=2, max_length=4)] = "ab"
    note: Annotated[str, Field(min_length=1)] = "x"
    flag: bool = False
    method: Literal["cash", "card", "other"] = "cash"
    role: Role = Role.CASHIER
    day: date | None = None
    at: AwareDatetime | None = None
    strict: StrictInt = 0
    tags: Annotated[list[str], Field(min_length=1, max_length=2)] = ["a"]
    raw: pydantic.Json[dict[str, int]] | None = None
    items: list[Line] = []
    code: str = "ok"

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if value == "english":
            raise ValueError("code is not allowed")  # a library-style English reason: never shown
        if value == "chinese":
            raise ValueError("不能为 chinese")
        return value

    @model_validator(mode="after")
    def _not_seven(self) -> Sample:
        if self.count == 7:
            raise ValueError("count 与 ratio 不能同时为 7")
        return self


@pytest.mark.parametrize(
    ("data", "kind", "field", "message"),
    [
        ({}, "missing", "required", "缺少必填字段 required"),
        ({"surplus": 1}, "extra_forbidden", "surplus", "不支持字段 surplus，请删除后重试"),
        ({"count": "many"}, "int_parsing", "count", "count 须为整数"),
        ({"count": 1.5}, "int_from_float", "count", "count 须为整数"),
        ({"strict": "1"}, "int_type", "strict", "strict 须为整数"),
        ({"count": 0}, "greater_than_equal", "count", "count 不能小于 1"),
        ({"count": 11}, "less_than_equal", "count", "count 不能大于 10"),
        ({"ratio": 0}, "greater_than", "ratio", "ratio 须大于 0"),
        ({"ratio": 100}, "less_than", "ratio", "ratio 须小于 100"),
        ({"name": "a"}, "string_too_short", "name", "name 至少 2 个字符"),
        ({"note": ""}, "string_too_short", "note", "note 不能为空"),
        ({"name": "abcde"}, "string_too_long", "name", "name 最多 4 个字符"),
        ({"name": 5}, "string_type", "name", "name 须为字符串"),
        ({"flag": "maybe"}, "bool_parsing", "flag", "flag 须为 true 或 false"),
        ({"flag": [1]}, "bool_type", "flag", "flag 须为 true 或 false"),
        ({"method": "coupon"}, "literal_error", "method", "method 须为以下之一：cash、card、other"),
        ({"role": "boss"}, "enum", "role", "role 须为以下之一：cashier、manager、admin"),
        ({"raw": "{not json"}, "json_invalid", "raw", "raw 不是有效的 JSON"),
        ({"day": "tomorrow"}, "date_from_datetime_parsing", "day", "day 须为日期，如 2024-05-20"),
        ({"day": 3.5}, "date_from_datetime_inexact", "day", "day 须为日期（不带时间），如 2024-05-20"),
        (
            {"at": "yesterday"},
            "datetime_from_date_parsing",
            "at",
            "at 须为带时区的日期时间，如 2024-05-20T10:00:00+08:00",
        ),
        ({"at": "2024-05-20T10:00:00"}, "timezone_aware", "at", "at 须带时区，如 2024-05-20T10:00:00+08:00"),
        ({"tags": []}, "too_short", "tags", "tags 至少 1 项"),
        ({"tags": ["a", "b", "c"]}, "too_long", "tags", "tags 最多 2 项"),
        ({"tags": "a"}, "list_type", "tags", "tags 须为数组"),
        ({"items": [{"qty": 2}, {"qty": 0}]}, "greater_than_equal", "items.1.qty", "items.1.qty 不能小于 1"),
        ({"items": [{}]}, "missing", "items.0.qty", "缺少必填字段 items.0.qty"),
        ({"code": "english"}, "value_error", "code", "code 的值无效"),
        ({"code": "chinese"}, "value_error", "code", "code：不能为 chinese"),
        ({"count": 7}, "value_error", None, "count 与 ratio 不能同时为 7"),
    ],
)
def test_pydantic_errors_read_as_chinese_sentences_naming_the_field(
    data: dict[str, Any], kind: str, field: str | None, message: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Sample.model_validate({"required": 1, **data} if data else data)
    first = caught.value.errors(include_url=False)[0]
    assert first["type"] == kind
    assert (".".join(str(part) for part in first["loc"]) or None) == field
    assert pydantic_message(first) == message


def test_unknown_pydantic_error_types_and_a_body_that_is_no_object_still_read_as_chinese() -> None:
    assert (
        pydantic_message({"type": "some_future_type", "loc": ("amount",), "msg": "Bad"}) == "amount 的值无效"
    )
    assert (
        pydantic_message({"type": "greater_than_equal", "loc": ("amount",), "ctx": {}}) == "amount 的值无效"
    )
    with pytest.raises(pydantic.ValidationError) as caught:
        Sample.model_validate([1, 2])
    assert pydantic_message(caught.value.errors()[0]) == "请求体须为 JSON 对象"


async def _refused(
    client: Any, path: str, body: Any, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=headers or {})
    error = (await response.json())["error"]
    assert response.status == 400, error
    assert error["code"] == "validation_error", error
    assert CJK.search(error["message"]), error
    assert error["field"] in error["message"], error
    return dict(error)


async def test_staff_login_validation_errors_name_the_field_in_chinese(client: Any) -> None:
    login = "/api/staff/login"
    missing = await _refused(client, login, {"merchant": "shop", "username": "carl"})
    assert (missing["field"], missing["message"]) == ("password", "缺少必填字段 password")
    extra = await _refused(client, login, {"merchant": "shop", "username": "carl", "password": "x", "otp": 1})
    assert (extra["field"], extra["message"]) == ("otp", "不支持字段 otp，请删除后重试")
    empty = await _refused(client, login, {"merchant": "shop", "username": "", "password": "x"})
    assert (empty["field"], empty["message"]) == ("username", "username 不能为空")
    wrong_type = await _refused(client, login, {"merchant": "shop", "username": 42, "password": "x"})
    assert (wrong_type["field"], wrong_type["message"]) == ("username", "username 须为字符串")


async def test_purchase_validation_errors_name_the_field_in_chinese(client: Any) -> None:
    merchant = await make_merchant()
    member = await make_member(merchant)
    headers = await staff_headers(client, merchant)
    valid = {"idempotency_key": "k-1", "member_code": member.code, "amount_fen": 1000}
    path = "/api/staff/purchases"
    below = await _refused(client, path, {**valid, "amount_fen": 0}, headers)
    assert (below["field"], below["message"]) == ("amount_fen", "amount_fen 不能小于 1")
    nested = {**valid, "items": [{"sku": "latte", "qty": 0, "unit_price_fen": 100}]}
    item = await _refused(client, path, nested, headers)
    assert (item["field"], item["message"]) == ("items.0.qty", "items.0.qty 不能小于 1")
    wrong_type = await _refused(client, path, {**valid, "amount_fen": "ten yuan"}, headers)
    assert (wrong_type["field"], wrong_type["message"]) == ("amount_fen", "amount_fen 须为整数")
    missing = await _refused(client, path, {"member_code": member.code, "amount_fen": 1000}, headers)
    assert (missing["field"], missing["message"]) == ("idempotency_key", "缺少必填字段 idempotency_key")
    extra = await _refused(client, path, {**valid, "discount": 5}, headers)
    assert (extra["field"], extra["message"]) == ("discount", "不支持字段 discount，请删除后重试")
    both = await client.post(path, json={**valid, "member_id": member.id}, headers=headers)
    error = (await both.json())["error"]
    assert both.status == 400 and error["code"] == "validation_error" and "field" not in error
    assert error["message"] == "member_id 和 member_code 须且只能填写一个"


async def test_an_unknown_path_is_a_chinese_not_found(client: Any) -> None:
    response = await client.get("/api/staff/nothing-here")
    assert response.status == 404
    error = (await response.json())["error"]
    assert error == {"code": "not_found", "message": "接口不存在，请检查请求地址"}


async def test_a_wrong_method_is_method_not_allowed_with_its_allow_header(client: Any) -> None:
    response = await client.get("/api/staff/login")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    error = (await response.json())["error"]
    assert error == {"code": "method_not_allowed", "message": "该接口不支持 GET 请求（可用：POST）"}
    deleted = await client.delete("/api/staff/purchases")
    assert deleted.status == 405 and (await deleted.json())["error"]["code"] == "method_not_allowed"
