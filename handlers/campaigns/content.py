"""A campaign's content per channel: jinja2 over member variables (the notices' sandbox), checked
whole before a campaign may be scheduled, rendered per member when sent.

- `mass`: `{"text"}` — one text to a whole batch of openids, so it may use `merchant_name` and
  `campaign_name` only; optional `wechat_tag_id` (a WeChat tag synced from a segment: `mass/sendall`).
- `custom`: `{"text"}` with member variables (≤ 600 characters).
- `subscribe`: `{"fields": {keyword: expression}, "page"?}` and the campaign's `template_id`; each
  value within its keyword type's limit (thing ≤ 20, phrase ≤ 5 …).
- `sms`: `{"params": [expression, …]}` and the campaign's `template_id` (the provider's approved
  template, which carries the opt-out 回复TD退订); each value ≤ 12 characters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes

from handlers.core.errors import ValidationError
from handlers.core.templating import LimitedSandbox
from handlers.notices.settings import render
from handlers.rules import campaigns as rules
from handlers.rules.notices import template_value

MAX_EXPRESSION = 200
MAX_TEXT_SOURCE = 2000
_TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SMS_TEMPLATE_ID = re.compile(r"^[0-9]{1,16}$")
_PAGE = re.compile(r"^[A-Za-z0-9_/.-]{1,128}$")
_PARSER = LimitedSandbox(autoescape=False)  # parsing only (plain texts render without it)
MEMBER_VARIABLES = ("member_name", "member_code", "points", "merchant_name", "campaign_name")
SAMPLE = {
    "member_name": "王小明",
    "member_code": "M0000001",
    "points": 1280,
    "merchant_name": "示例门店",
    "campaign_name": "会员日",
}


@dataclass(frozen=True, slots=True)
class Rendered:
    """What one member is sent: the text (mass, custom), the keyword values (subscribe) or the SMS
    template parameters; `shown` is how it reads, for the preview and the recipient list."""

    text: str = ""
    fields: Mapping[str, str] | None = None
    params: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        if self.fields is not None:
            return " / ".join(self.fields.values())
        if self.params:
            return " / ".join(self.params)
        return self.text


def member_context(
    *, name: str | None, code: str, points: int, merchant_name: str, campaign_name: str
) -> dict[str, Any]:
    return {
        "member_name": name or "会员",
        "member_code": code,
        "points": points,
        "merchant_name": merchant_name,
        "campaign_name": campaign_name,
    }


@functools.lru_cache(maxsize=256)
def _plain_parts(source: str) -> tuple[tuple[bool, str], ...] | None:
    """(is a variable, text or name) of a template that is only text and `{{ name }}`s — most campaign
    texts — rendered without a jinja context (a third of a message's cost); None for anything else."""
    try:
        tree = _PARSER.parse(source)
    except jinja2.TemplateError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts: list[tuple[bool, str]] = []
    for node in tree.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append((False, node.data))
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            parts.append((True, node.name))
        else:
            return None
    return tuple(parts)


def _render(source: str, context: Mapping[str, Any], where: str) -> str:
    parts = _plain_parts(source)
    if parts is not None and all(name in context for variable, name in parts if variable):
        return "".join(str(context[value]) if variable else value for variable, value in parts).strip()
    try:
        return render(source, dict(context)).strip()
    except jinja2.UndefinedError as exc:
        names = "、".join(MEMBER_VARIABLES)
        raise ValidationError(f"{where}：使用了不存在的变量（{exc}），可用：{names}", field=where) from exc
    except jinja2.TemplateError as exc:
        raise ValidationError(f"{where}：模板无法解析或不允许（{exc}）", field=where) from exc
    except Exception as exc:  # e.g. {{ 1 // 0 }}: compiles, never renders
        raise ValidationError(f"{where}：模板无法渲染（{type(exc).__name__}）", field=where) from exc


def _text(raw: Mapping[str, Any], where: str) -> str:
    value = raw.get("text")
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT_SOURCE:
        raise ValidationError(f"{where}：须为 1–{MAX_TEXT_SOURCE} 个字符的文本", field=where)
    return value


def render_for(channel: rules.Channel, content: Mapping[str, Any], context: Mapping[str, Any]) -> Rendered:
    """The content for one member, checked against the channel's limits (ValidationError naming the
    part that does not fit)."""
    if channel in ("mass", "custom"):
        if channel == "mass":  # one text for a whole batch: no member variables
            context = {k: context[k] for k in ("merchant_name", "campaign_name") if k in context}
        text = _render(_text(content, "content.text"), context, "content.text")
        if (refusal := rules.text_refusal(channel, text)) is not None:
            raise ValidationError(f"消息内容 content.text：{refusal}", field="content.text")
        return Rendered(text=text)
    if channel == "subscribe":
        fields = content.get("fields")
        if not isinstance(fields, dict) or not 1 <= len(fields) <= 10:
            raise ValidationError("content.fields：须为 1–10 个关键词到内容的映射", field="content.fields")
        values: dict[str, str] = {}
        for keyword, source in fields.items():
            where = f"content.fields.{keyword}"
            if not isinstance(source, str) or not 1 <= len(source) <= MAX_EXPRESSION:
                raise ValidationError(f"{where}：须为不超过 {MAX_EXPRESSION} 个字符的文本", field=where)
            value = " ".join(_render(source, context, where).split())
            if (refusal := rules.subscribe_value_refusal(str(keyword), value)) is not None:
                raise ValidationError(f"订阅消息内容 {where}：{refusal}", field=where)
            values[str(keyword)] = value
        return Rendered(fields=values)
    params = content.get("params")
    if not isinstance(params, list) or not params:
        raise ValidationError("content.params：须为短信模板参数的列表", field="content.params")
    rendered = []
    for n, source in enumerate(params):
        where = f"content.params.{n}"
        if not isinstance(source, str) or not 1 <= len(source) <= MAX_EXPRESSION:
            raise ValidationError(f"{where}：须为不超过 {MAX_EXPRESSION} 个字符的文本", field=where)
        rendered.append(template_value(_render(source, context, where)))
    if (refusal := rules.sms_params_refusal(rendered)) is not None:
        raise ValidationError(f"短信参数 content.params：{refusal}", field="content.params")
    return Rendered(params=tuple(rendered))


def renderer(channel: rules.Channel, content: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], Rendered]:
    """`render_for` bound to one campaign's content, for a send that renders it per member. Subscribe
    fields that are only text and `{{ name }}`s are checked and parsed here, once; anything else (and a
    member whose value does not fit, so the refusal reads the same) goes through `render_for`."""
    fields = content.get("fields") if channel == "subscribe" else None
    if isinstance(fields, dict) and 1 <= len(fields) <= 10:
        plans: list[tuple[str, tuple[tuple[bool, str], ...]]] = []
        for keyword, source in fields.items():
            parts = (
                _plain_parts(source)
                if isinstance(source, str) and 1 <= len(source) <= MAX_EXPRESSION
                else None
            )
            if parts is None:
                break
            plans.append((str(keyword), parts))
        else:
            return functools.partial(_plain_subscribe, tuple(plans), content)
    return functools.partial(render_for, channel, content)


def _plain_subscribe(
    plans: tuple[tuple[str, tuple[tuple[bool, str], ...]], ...],
    content: Mapping[str, Any],
    context: Mapping[str, Any],
) -> Rendered:
    values: dict[str, str] = {}
    for keyword, parts in plans:
        try:
            text = "".join(str(context[value]) if variable else value for variable, value in parts)
        except KeyError:
            return render_for("subscribe", content, context)
        value = " ".join(text.split())
        if rules.subscribe_value_refusal(keyword, value) is not None:
            return render_for("subscribe", content, context)
        values[keyword] = value
    return Rendered(fields=values)


def check(channel: rules.Channel, content: Mapping[str, Any], template_id: str) -> None:
    """The content's shape and the channel's ids, before any member (nothing is saved if one part is
    wrong)."""
    known = {"mass": {"text", "wechat_tag_id"}, "custom": {"text"}, "subscribe": {"fields", "page"}}
    allowed = known.get(channel, {"params"})
    if unknown := sorted(set(content) - allowed):
        raise ValidationError(
            f"content：{channel} 渠道没有 {unknown[0]} 这一项", field=f"content.{unknown[0]}"
        )
    if channel == "subscribe":
        if not _TEMPLATE_ID.match(template_id):
            raise ValidationError("template_id：订阅消息须指定小程序模板 ID", field="template_id")
        page = content.get("page")
        if page is not None and not (isinstance(page, str) and _PAGE.match(page)):
            raise ValidationError("content.page：应为小程序页面路径，不带参数", field="content.page")
    elif channel == "sms":
        if not _SMS_TEMPLATE_ID.match(template_id):
            raise ValidationError("template_id：短信须指定已审核的短信模板 ID（数字）", field="template_id")
    elif template_id:
        raise ValidationError(f"template_id：{channel} 渠道不使用模板 ID", field="template_id")
    tag = content.get("wechat_tag_id")
    if tag is not None and not (isinstance(tag, int) and not isinstance(tag, bool) and 100 <= tag < 2**31):
        raise ValidationError("content.wechat_tag_id：应为已同步的微信标签 ID", field="content.wechat_tag_id")
