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


def test_a_campaigns_bound_renderer_renders_and_refuses_as_render_for_does() -> None:
    """The send renders through `renderer` (the content checked and parsed once); every member must get
    what `render_for` gives, and a value that does not fit is refused with the same field and words."""
    import pytest

    from handlers.campaigns import content
    from handlers.core.errors import ValidationError

    members = [
        {**content.SAMPLE},
        {**content.SAMPLE, "member_name": "  李  四 ", "points": 0},
        {**content.SAMPLE, "member_name": "很长很长很长很长很长很长很长很长很长很长的名字"},  # thing1 > 20
    ]
    contents = [
        {"fields": {"thing1": "{{ member_name }}，会员日到啦", "thing2": "{{ merchant_name }}"}},
        {"fields": {"thing1": "{{ member_name | upper }}", "number2": "{{ points }}"}},  # not plain
        {"fields": {"thing1": "{{ nickname }}"}},  # an unknown variable
        {"fields": {"bad keyword": "{{ member_name }}"}},
    ]
    for source in contents:
        bound = content.renderer("subscribe", source)
        for member in members:
            try:
                expected = content.render_for("subscribe", source, member)
            except ValidationError as exc:
                with pytest.raises(ValidationError) as refused:
                    bound(member)
                assert (refused.value.field, str(refused.value)) == (exc.field, str(exc))
            else:
                assert bound(member) == expected
    plain = content.renderer("subscribe", contents[0])
    assert plain(members[1]).fields == {"thing1": "李 四 ，会员日到啦", "thing2": "示例门店"}
