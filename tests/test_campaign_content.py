"""Campaign content: plain texts (text and {{ name }}s) render without a jinja context, exactly as the
sandbox would render them; anything else goes through the sandbox."""

from __future__ import annotations


def test_plain_texts_render_as_jinja_would() -> None:
    from handlers.campaigns import content
    from handlers.notices.settings import render

    context = {**content.SAMPLE, "points": 0}
    for source in (
        "{{ member_name }}，会员日到啦",
        "积分 {{points}} 分",
        "纯文本",
        "{{ member_name }}{{ member_code }}",
    ):
        assert content._plain_parts(source) is not None, source
        assert content._render(source, context, "x") == render(source, dict(context)).strip()
    for source in ("{{ member_name | upper }}", "{% if points %}有{% endif %}", "{{ a.b }}"):
        assert content._plain_parts(source) is None, source
