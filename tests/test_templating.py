"""Merchant reply overrides are sandboxed, bounded, and never break a reply."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import meta

from bot.settings import ROOT
from handlers.core.errors import ValidationError
from handlers.core.reply_samples import SAMPLES
from handlers.core.templating import Renderer
from models.merchant import ReplyTemplate
from tests.support.factories import make_merchant, staff_headers
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
        "{% for row in recent %}\n{{ row.label|default('-') }} {{ row.delta }}{% endfor %}"
    )
    renderer.validate_override("points_summary", source)


@pytest.mark.parametrize(
    ("name", "source", "named"),
    [
        ("help", "{{ self.__init__.__globals__ }}", "__init__"),
        ("help", "{{ balance }} 积分", "balance"),
        ("welcome", "欢迎 {{ nickname }}", "nickname"),
        ("points_summary", "{% for row in recent %}{{ row.amount }}{% endfor %}", "amount"),
    ],
)
async def test_an_override_using_a_name_it_is_not_given_is_refused_when_saved(
    client: Any, name: str, source: str, named: str
) -> None:
    """`{{ self.__init__.__globals__ }}` used to be accepted and then blank the 帮助 reply."""
    with pytest.raises(ValidationError) as caught:
        client.app[RENDERER].validate_override(name, source)
    assert caught.value.field == "source" and named in caught.value.message


async def test_the_admin_api_refuses_such_an_override_with_a_400_naming_it(client: Any) -> None:
    merchant = await make_merchant()
    headers = await staff_headers(client, merchant, role="admin")
    response = await client.put(
        "/api/admin/reply-templates/help", json={"source": "{{ self.__init__.__globals__ }}"}, headers=headers
    )
    body = await response.json()
    assert response.status == 400 and body["error"]["field"] == "source"
    assert "__init__" in body["error"]["message"]
    assert await ReplyTemplate.filter(merchant_id=merchant.id).count() == 0


def test_every_built_in_reply_renders_strictly_with_its_sample() -> None:
    """The samples are exactly what the built-ins use (and so what an override may use)."""
    renderer = Renderer(ROOT / "templates")
    assert set(SAMPLES) == set(renderer.reply_names())
    for name in renderer.reply_names():
        source = renderer.text.loader.get_source(renderer.text, f"replies/{name}.txt.j2")[0]  # type: ignore[union-attr]
        used = meta.find_undeclared_variables(renderer.text.parse(source)) - {"merchant_name"}
        assert used <= set(SAMPLES[name]), (name, used - set(SAMPLES[name]))
        assert renderer.text.get_template(f"replies/{name}.txt.j2").render(
            merchant_name="店", **SAMPLES[name]
        )
        renderer.validate_override(name, source)  # the built-in itself is a valid override


async def test_a_stored_override_outside_the_rules_is_ignored(client: Any) -> None:
    merchant = await make_merchant()
    renderer = client.app[RENDERER]
    built_in = await renderer.reply(merchant.id, "cancelled", merchant_name="店")
    await ReplyTemplate.create(merchant_id=merchant.id, name="cancelled", source="{{ 'x'|center(99999999) }}")
    renderer.forget(merchant.id)
    assert await renderer.reply(merchant.id, "cancelled", merchant_name="店") == built_in
