"""The console's one form-submit helper: what a refusal becomes, and what is passed on to `page()`."""

from __future__ import annotations

import pytest
from aiohttp import web

from handlers.core.errors import DomainError, ErrorCode
from webhooks.api import ApiError
from webhooks.console.base import FormErrors, submit


async def _refused(errors: dict[str, str]) -> web.StreamResponse:
    return web.json_response(errors, status=400)


async def _run(exc: Exception, **options: object) -> web.Response:
    async def attempt() -> web.StreamResponse:
        raise exc

    response = await submit(attempt, _refused, **options)  # type: ignore[arg-type]
    assert isinstance(response, web.Response) and response.text is not None
    return response


async def test_a_successful_attempt_is_the_answer() -> None:
    async def attempt() -> web.StreamResponse:
        return web.Response(status=303)

    assert (await submit(attempt, _refused)).status == 303


@pytest.mark.parametrize(
    ("exc", "shown"),
    [
        (FormErrors({"name": "必填", "price": "须为数字"}), {"item.name": "必填", "item.price": "须为数字"}),
        (DomainError("价格太高", field="price"), {"item.price": "价格太高"}),
        (ApiError(409, ErrorCode.CONFLICT, "已发放"), {"item.form": "已发放"}),
    ],
)
async def test_every_refusal_is_named_by_field_under_the_prefix(
    exc: Exception, shown: dict[str, str]
) -> None:
    response = await _run(exc, prefix="item")
    assert response.status == 400
    assert response.text == web.json_response(shown).text


async def test_without_a_prefix_the_field_names_stay() -> None:
    response = await _run(FormErrors({"document": "JSON 有误"}))
    assert response.text == web.json_response({"document": "JSON 有误"}).text


async def test_a_forbidden_answer_is_raised_on_and_the_passes_are_chosen() -> None:
    with pytest.raises(ApiError):
        await _run(ApiError(403, ErrorCode.FORBIDDEN, "需要管理员权限"))
    with pytest.raises(ApiError):
        await _run(ApiError(404, ErrorCode.NOT_FOUND, "不存在"), passes=(403, 404))
    assert (await _run(ApiError(404, ErrorCode.NOT_FOUND, "不存在"))).status == 400
    assert (await _run(ApiError(403, ErrorCode.FORBIDDEN, "x"), passes=())).status == 400
