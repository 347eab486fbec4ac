"""Merchant reply overrides are sandboxed, bounded, and never break a reply."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.errors import ValidationError
from models.merchant import ReplyTemplate
from tests.support.factories import make_merchant
from webhooks.appkeys import RENDERER


@pytest.mark.parametrize("source", [
    "{{ 'x' * 1000000000 }}", "{{ [1] * 100000 }}", "{{ 2 ** 100000 }}", "{{ 1 // 0 }}",
    "{% for %}",
])
async def test_dangerous_or_broken_overrides_are_refused_when_saved(client: Any, source: str) -> None:
    with pytest.raises(ValidationError) as caught:
        client.app[RENDERER].validate_override("help", source)
    assert caught.value.field == "source"


async def test_an_override_failing_for_some_data_falls_back_to_the_built_in(client: Any) -> None:
    merchant = await make_merchant()
    renderer = client.app[RENDERER]
    built_in = await renderer.reply(merchant.id, "cancelled", merchant_name="店")
    await ReplyTemplate.create(merchant_id=merchant.id, name="cancelled", source="{{ 10 // count }}")
    renderer.forget(merchant.id)
    assert await renderer.reply(merchant.id, "cancelled", merchant_name="店", count=2) == "5"
    assert await renderer.reply(merchant.id, "cancelled", merchant_name="店", count=0) == built_in


async def test_a_template_may_use_a_variable_called_name(client: Any) -> None:
    merchant = await make_merchant()
    renderer = client.app[RENDERER]
    await ReplyTemplate.create(merchant_id=merchant.id, name="cancelled", source="再见 {{ name }}")
    renderer.forget(merchant.id)
    assert await renderer.reply(merchant.id, "cancelled", name="小明") == "再见 小明"
