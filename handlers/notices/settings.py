"""A merchant's notice settings per kind: switched on or off, the channel order, the WeChat template
ids and field mappings, the message text. Unset kinds use the catalogue's defaults; every text and
field is rendered against the kind's sample data when saved, so a broken one is refused then."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import time
from typing import Any

import jinja2
from jinja2 import nodes

from handlers.core import audit_log
from handlers.core.errors import NotFound, ValidationError
from handlers.core.templating import LimitedSandbox, check_constructs
from handlers.notices.catalog import KINDS, NoticeKind
from handlers.rules.notices import Channel, ChannelConfig, custom_text, template_value, valid_order
from models.merchant import Merchant
from models.notice import NoticeSetting

DEFAULT_ORDER: tuple[Channel, ...] = ("template", "subscribe", "custom")
MAX_FIELDS = 10
MAX_EXPRESSION = 200
MAX_BODY = 1000
_TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KEYWORD = re.compile(r"^[a-z_]{1,32}[0-9]{1,2}$")  # thing1, amount2, character_string3 …
_KEYWORD_NUMBER = re.compile(r"[0-9]+$")
_PAGE = re.compile(r"^[A-Za-z0-9_/.-]{1,128}$")
_URL = re.compile(r"^https://[^\s]{1,1000}$")
_SANDBOX = LimitedSandbox(autoescape=False, undefined=jinja2.StrictUndefined)


@dataclass(frozen=True, slots=True)
class Setting:
    kind: NoticeKind
    enabled: bool
    channels: tuple[Channel, ...]
    template_id: str
    template_fields: dict[str, str]
    template_url: str
    subscribe_template_id: str
    subscribe_fields: dict[str, str]
    subscribe_page: str
    body: str
    customised: bool  # the merchant saved settings for this kind

    @property
    def channel_config(self) -> ChannelConfig:
        return ChannelConfig(self.channels, self.template_id, self.subscribe_template_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "channels": list(self.channels),
            "template_id": self.template_id,
            "template_fields": dict(self.template_fields),
            "template_url": self.template_url,
            "subscribe_template_id": self.subscribe_template_id,
            "subscribe_fields": dict(self.subscribe_fields),
            "subscribe_page": self.subscribe_page,
            "body": self.body,
        }


def default(kind: NoticeKind) -> Setting:
    return Setting(
        kind, True, DEFAULT_ORDER, "", dict(kind.fields), "", "", dict(kind.fields), "", kind.body, False
    )


def kind_of(code: str) -> NoticeKind:
    kind = KINDS.get(code)
    if kind is None:
        raise NotFound(f"没有名为 {code} 的通知", field="kind")
    return kind


def _from_row(kind: NoticeKind, raw: dict[str, Any]) -> Setting:
    base = default(kind).as_dict()
    merged = {**base, **raw}
    return Setting(
        kind,
        bool(merged["enabled"]),
        tuple(merged["channels"]),
        merged["template_id"],
        dict(merged["template_fields"]),
        merged["template_url"],
        merged["subscribe_template_id"],
        dict(merged["subscribe_fields"]),
        merged["subscribe_page"],
        merged["body"],
        True,
    )


async def setting(merchant_id: int, code: str) -> Setting:
    row = await NoticeSetting.get_or_none(merchant_id=merchant_id, kind=code)
    return setting_of(code, row.settings if row is not None else None)


def setting_of(code: str, saved: dict[str, Any] | None) -> Setting:
    """Kind `code`'s setting from the settings a merchant saved for it (None: the defaults)."""
    kind = kind_of(code)
    return _from_row(kind, saved) if saved is not None else default(kind)


async def all_settings(merchant_id: int) -> list[Setting]:
    rows = {row.kind: row for row in await NoticeSetting.filter(merchant_id=merchant_id)}
    return [_from_row(k, rows[k.code].settings) if k.code in rows else default(k) for k in KINDS.values()]


def render(source: str, context: dict[str, Any]) -> str:
    """A merchant's text over a notice's context, in the sandbox (the caller handles failures)."""
    return _compiled(source).render(**context)


@functools.lru_cache(maxsize=1024)
def _compiled(source: str) -> jinja2.Template:
    """Checked and compiled once per source text: compiling was a fifth of a notice's send."""
    check_constructs(_SANDBOX.parse(source))
    return _SANDBOX.from_string(source)


def render_fields(fields: dict[str, str], context: dict[str, Any]) -> dict[str, str]:
    """Each keyword's value, in WeChat's display order (the number a keyword ends with: thing1, amount2)."""
    keywords, combined, plan = _compiled_fields(tuple(fields.items()))
    if combined is not None:
        text = _follow(plan, context) if plan is not None else None
        values = (combined.render(**context) if text is None else text).split(_SEPARATOR)
        if len(values) == len(keywords):
            return {keyword: template_value(value) for keyword, value in zip(keywords, values, strict=True)}
    return {keyword: template_value(render(fields[keyword], context)) for keyword in keywords}


# Between the fields of one combined template: PostgreSQL text (a context, a merchant's expression)
# cannot hold NUL, so no rendered field contains it.
_SEPARATOR = "\x00"


@functools.lru_cache(maxsize=1024)
def _compiled_fields(
    fields: tuple[tuple[str, str], ...],
) -> tuple[tuple[str, ...], jinja2.Template | None, tuple[str | _Name, ...] | None]:
    """The keywords in display order; their expressions as ONE template (one render a message instead
    of one a field), each checked as `render` checks it — the expressions allow no assignments, so one
    field cannot change another's data; None if they do not combine cleanly — and, when that template
    is only text and names (`{{ paid }}元`, as every default is), the plan `_follow` renders it by."""
    ordered = sorted(fields, key=lambda item: int(_KEYWORD_NUMBER.search(item[0]).group()))  # type: ignore[union-attr]
    for _, expression in ordered:
        _compiled(expression)
    source = _SEPARATOR.join(expression for _, expression in ordered)
    try:
        combined = _SANDBOX.from_string(source)
    except jinja2.TemplateError:
        return tuple(keyword for keyword, _ in ordered), None, None
    return tuple(keyword for keyword, _ in ordered), combined, _plan(_SANDBOX.parse(source))


@dataclass(frozen=True, slots=True)
class _Name:
    name: str


def _plan(tree: nodes.Template) -> tuple[str | _Name, ...] | None:
    """The template as text and names, if that is all it is."""
    plan: list[str | _Name] = []
    for output in tree.body:
        if not isinstance(output, nodes.Output):
            return None
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData):
                plan.append(node.data)
            elif isinstance(node, nodes.Name) and node.ctx == "load":
                plan.append(_Name(node.name))
            else:
                return None
    return tuple(plan)


def _follow(plan: tuple[str | _Name, ...], context: dict[str, Any]) -> str | None:
    """What jinja renders for a plan (`str` of each name's value); None when a name is missing, for
    jinja to raise its error."""
    parts = []
    for part in plan:
        if isinstance(part, str):
            parts.append(part)
        elif part.name in context:
            parts.append(str(context[part.name]))
        else:
            return None
    return "".join(parts)


def render_body(source: str, context: dict[str, Any]) -> str:
    return custom_text(render(source, context))


def _check(source: str, where: str, kind: NoticeKind, limit: int) -> None:
    if not isinstance(source, str) or len(source) > limit:
        raise ValidationError(f"{where}：须为不超过 {limit} 个字符的文本", field=where)
    try:
        text = render(source, kind.sample)
    except jinja2.UndefinedError as exc:
        raise ValidationError(f"{where}：使用了通知中没有的内容（{exc}）", field=where) from exc
    except jinja2.TemplateError as exc:
        raise ValidationError(f"{where}：模板无法解析或不允许（{exc}）", field=where) from exc
    except Exception as exc:  # e.g. {{ 1 // 0 }}: compiles, but can never render
        raise ValidationError(f"{where}：模板无法渲染（{type(exc).__name__}）", field=where) from exc
    if not text.strip():
        raise ValidationError(f"{where}：渲染结果为空", field=where)


def _fields(raw: object, where: str, kind: NoticeKind) -> dict[str, str]:
    if not isinstance(raw, dict) or not 1 <= len(raw) <= MAX_FIELDS:
        raise ValidationError(f"{where}：须为 1–{MAX_FIELDS} 个关键词到内容的映射", field=where)
    for keyword, expression in raw.items():
        if not isinstance(keyword, str) or not _KEYWORD.match(keyword):
            raise ValidationError(f"{where}：关键词 {keyword!r} 应形如 thing1、amount2", field=where)
        _check(expression, f"{where}.{keyword}", kind, MAX_EXPRESSION)
    return {str(k): str(v) for k, v in raw.items()}


def validate(kind: NoticeKind, raw: object) -> dict[str, Any]:
    """The settings a merchant sent, checked whole (nothing is saved if one part is wrong)."""
    if not isinstance(raw, dict):
        raise ValidationError("通知设置须为 JSON 对象", field="body")
    known = set(default(kind).as_dict())
    if unknown := sorted(set(raw) - known):
        raise ValidationError(f"未知的设置项：{', '.join(unknown)}", field=unknown[0])
    merged = {**default(kind).as_dict(), **raw}
    if not isinstance(merged["enabled"], bool):
        raise ValidationError("enabled：须为 true 或 false", field="enabled")
    try:
        channels = valid_order(merged["channels"] if isinstance(merged["channels"], list) else [""])
    except ValueError as exc:
        raise ValidationError(f"渠道 channels：{exc}", field="channels") from None
    for name in ("template_id", "subscribe_template_id"):
        if merged[name] and not (isinstance(merged[name], str) and _TEMPLATE_ID.match(merged[name])):
            raise ValidationError(f"{name}：应为微信模板 ID（字母、数字、-、_，不超过 64 位）", field=name)
    if merged["template_url"] and not (
        isinstance(merged["template_url"], str) and _URL.match(merged["template_url"])
    ):
        raise ValidationError("template_url：须为 https:// 开头的完整链接", field="template_url")
    if merged["subscribe_page"] and not (
        isinstance(merged["subscribe_page"], str) and _PAGE.match(merged["subscribe_page"])
    ):
        raise ValidationError("subscribe_page：应为小程序页面路径，不带参数", field="subscribe_page")
    merged["template_fields"] = _fields(merged["template_fields"], "template_fields", kind)
    merged["subscribe_fields"] = _fields(merged["subscribe_fields"], "subscribe_fields", kind)
    _check(merged["body"], "body", kind, MAX_BODY)
    merged["channels"] = list(channels)
    return merged


async def save(merchant: Merchant, code: str, raw: object, *, actor: str) -> Setting:
    kind = kind_of(code)
    checked = validate(kind, raw)
    row = await NoticeSetting.get_or_none(merchant_id=merchant.id, kind=code)
    if row is None:
        await NoticeSetting.create(
            merchant_id=merchant.id, kind=code, settings=checked, updated_by=actor[:32]
        )
    else:
        row.settings, row.updated_by = checked, actor[:32]
        await row.save(update_fields=["settings", "updated_by", "updated_at"])
    await audit_log.record(merchant.id, actor, "notice.settings", code, settings=checked)
    return _from_row(kind, checked)


async def reset(merchant: Merchant, code: str, *, actor: str) -> Setting:
    kind = kind_of(code)
    await NoticeSetting.filter(merchant_id=merchant.id, kind=code).delete()
    await audit_log.record(merchant.id, actor, "notice.settings.reset", code)
    return default(kind)


async def set_quiet_hours(merchant: Merchant, start: time, end: time, *, actor: str) -> None:
    """Merchant-local quiet hours for notices that are not urgent (start == end: none)."""
    merchant.quiet_start_minute, merchant.quiet_end_minute = (
        start.hour * 60 + start.minute,
        end.hour * 60 + end.minute,
    )
    await merchant.save(update_fields=["quiet_start_minute", "quiet_end_minute"])
    await audit_log.record(
        merchant.id, actor, "notice.quiet_hours", "", start=start.isoformat(), end=end.isoformat()
    )
