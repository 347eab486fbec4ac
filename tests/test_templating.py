"""Merchant reply overrides are sandboxed, bounded, and never break a reply."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.core.errors import ValidationError
from models.merchant import ReplyTemplate
from tests.support.factories import make_merchant
from webhooks.appkeys import RENDERER


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 1000000000 }}",
        "{{ [1] * 100000 }}",
        "{{ 2 ** 100000 }}",
        "{{ 1 // 0 }}",
        "{% for %}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% if code %}{{ 'x'|center(1000000000) }}{% endif %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{% macro m() %}x{% endmacro %}{{ m() }}",
    ],
)
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


async def test_everyday_overrides_are_accepted(client: Any) -> None:
    renderer = client.app[RENDERER]
    source = (
        "{{ merchant_name }}：{% if balance > 0 %}您有 {{ balance }} 积分{% else %}暂无积分{% endif %}"
        "{% for row in rows %}\n{{ row.label|default('-') }} {{ row.delta }}{% endfor %}"
    )
    renderer.validate_override("help", source)


async def test_a_stored_override_outside_the_rules_is_ignored(client: Any) -> None:
    merchant = await make_merchant()
    renderer = client.app[RENDERER]
    built_in = await renderer.reply(merchant.id, "cancelled", merchant_name="店")
    await ReplyTemplate.create(merchant_id=merchant.id, name="cancelled", source="{{ 'x'|center(99999999) }}")
    renderer.forget(merchant.id)
    assert await renderer.reply(merchant.id, "cancelled", merchant_name="店") == built_in
