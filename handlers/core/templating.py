"""Rendering of jinja2 templates, with per-merchant overrides of chat reply templates.

Built-in templates live under templates/. A merchant may override any `replies/` template; the
override is sandboxed (merchant-supplied source is untrusted), validated when saved, and cached per
process (`handlers.core.config_cache`) so the hot chat path does not query the database on every message.
"""

from __future__ import annotations

import logging
import operator
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from handlers.core import config_cache, reply_samples
from handlers.core.errors import ValidationError
from models.merchant import ReplyTemplate

log = logging.getLogger(__name__)
REPLY_DIR = "replies"
MAX_RENDERED_CHARS = 4000  # a chat reply WeChat accepts is well under this
MAX_OVERRIDE_CHARS = 4000


class LimitedSandbox(SandboxedEnvironment):
    """The sandbox for merchant-written templates, refusing arithmetic that builds huge values."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise jinja2.exceptions.SecurityError("exponent too large")
        if op == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
                if sized and len(seq) * count > MAX_RENDERED_CHARS:
                    raise jinja2.exceptions.SecurityError("repetition too large")
        return {"*": operator.mul, "**": operator.pow}[op](left, right)


# What a merchant's reply template may use: the data it is given, conditionals, loops over given lists
# and text filters. No assignments, macros, calls (so no range()) or width/padding filters, so nothing
# can build a value much larger than the template plus its data.
_ALLOWED_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Const,
    nodes.Getattr,
    nodes.Getitem,
    nodes.If,
    nodes.For,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.CondExpr,
    nodes.Concat,
    nodes.Filter,
    nodes.Test,
    nodes.Tuple,
    nodes.List,
    nodes.Pair,
    nodes.Keyword,
    nodes.Add,
    nodes.Sub,
    nodes.Mul,
    nodes.Div,
    nodes.FloorDiv,
    nodes.Mod,
    nodes.Neg,
    nodes.Pos,
)
SAFE_FILTERS = frozenset(
    {
        "default",
        "d",
        "upper",
        "lower",
        "title",
        "capitalize",
        "trim",
        "truncate",
        "length",
        "count",
        "first",
        "last",
        "join",
        "int",
        "float",
        "round",
        "abs",
        "string",
        "striptags",
        "e",
        "escape",
    }
)


def check_constructs(template: nodes.Template) -> None:
    """Refuse anything outside the allow-list above (a SecurityError naming the construct)."""
    for node in template.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            raise jinja2.exceptions.SecurityError(f"不允许使用 {type(node).__name__}")
        if isinstance(node, nodes.Filter) and node.name not in SAFE_FILTERS:
            raise jinja2.exceptions.SecurityError(f"不允许使用过滤器 {node.name}")


def _named(exc: Exception) -> str:
    """The name jinja's message is about: `'x' is undefined`, `... has no attribute 'x'`, `access to
    attribute 'x' of ... is unsafe` → x."""
    message = str(exc)
    for pattern in (r"attribute '([^']+)'", r"^'([^']+)' is undefined"):
        if match := re.search(pattern, message):
            return match.group(1)
    return message


_PLAIN = frozenset({str, int, bool, type(None)})
MAX_RENDERED_REPLIES = 4096


class Renderer:
    def __init__(self, root: Path, samples: Mapping[str, Mapping[str, Any]] = reply_samples.SAMPLES) -> None:
        """`samples`: what each reply template under `root` is given (overrides are checked against it)."""
        self.samples = samples
        loader = jinja2.FileSystemLoader(str(root))
        self.text = jinja2.Environment(
            loader=loader,
            autoescape=False,  # noqa: S701 - plain-text chat replies, never HTML
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.html = jinja2.Environment(
            loader=loader,
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # Strict: a name an override is not given fails (checked against sample data when saved; at
        # render time the built-in answers instead), rather than rendering as nothing.
        self.sandbox = LimitedSandbox(
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._root = root
        # Built-in replies already rendered for a context of plain values, e.g. 帮助's menu: a built-in
        # is a pure function of its context (no clock, no globals) and its file is part of the release,
        # so a process serves what it rendered first (editing a file on disk needs a restart).
        self._rendered: dict[tuple[str, tuple[tuple[str, object], ...]], str] = {}

    def reply_names(self) -> list[str]:
        folder = self._root / REPLY_DIR
        return sorted(p.name.removesuffix(".txt.j2") for p in folder.glob("*.txt.j2"))

    async def reply(self, merchant_id: int, name: str, /, **context: Any) -> str:
        """Render chat reply `name` for a merchant: its override if it renders, else the built-in.

        An override that fails at render time (it compiled when saved, but e.g. divides by zero for
        this member's data) or renders too long is logged and the built-in answers instead.
        """
        override = (await self._merchant_overrides(merchant_id)).get(name)
        if override is not None:
            try:
                text = override.render(**context).strip()
            except Exception as exc:
                log.warning(
                    "reply override failed; using the built-in",
                    extra={"merchant_id": merchant_id, "template": name, "error": type(exc).__name__},
                )
            else:
                if len(text) <= MAX_RENDERED_CHARS:
                    return text
                log.warning(
                    "reply override too long; using the built-in",
                    extra={"merchant_id": merchant_id, "template": name},
                )
        plain = all(type(value) in _PLAIN for value in context.values())
        key = (name, tuple(context.items()))
        if plain and (rendered := self._rendered.get(key)) is not None:
            return rendered
        text = self.text.get_template(f"{REPLY_DIR}/{name}.txt.j2").render(**context).strip()
        if plain:
            if len(self._rendered) >= MAX_RENDERED_REPLIES:
                self._rendered.clear()
            self._rendered[key] = text
        return text

    def message(self, name: str, **context: Any) -> str:
        """Render a push body under templates/messages/."""
        return self.text.get_template(f"messages/{name}.txt.j2").render(**context).strip()

    def page(self, name: str, **context: Any) -> str:
        """Render an HTML page under templates/pages/ or templates/admin/."""
        return self.html.get_template(name).render(**context)

    def validate_override(self, name: str, source: str) -> jinja2.Template:
        """Refuse an override for an unknown template, an over-long one, or one that does not compile."""
        if name not in self.reply_names():
            raise ValidationError(f"没有名为 {name} 的回复模板", field="name")
        if not source.strip() or len(source) > MAX_OVERRIDE_CHARS:
            raise ValidationError(f"模板内容须为 1–{MAX_OVERRIDE_CHARS} 个字符", field="source")
        try:
            check_constructs(self.sandbox.parse(source))
            template = self.sandbox.from_string(source)
        except jinja2.TemplateError as exc:
            raise ValidationError(f"模板无法解析: {exc}", field="source") from exc
        try:  # against what the reply is given: a name it is not given, a sandbox violation, {{ 1 // 0 }}
            text = template.render(merchant_name="街角咖啡", **self.samples.get(name, {})).strip()
        except jinja2.UndefinedError as exc:
            raise ValidationError(f"模板使用了回复中没有的内容：{_named(exc)}", field="source") from exc
        except jinja2.exceptions.SecurityError as exc:
            raise ValidationError(f"模板使用了不允许的内容：{_named(exc)}", field="source") from exc
        except Exception as exc:  # e.g. {{ 1 // 0 }}: compiles, but can never render
            raise ValidationError(f"模板无法渲染: {type(exc).__name__}", field="source") from exc
        if not text:
            raise ValidationError("模板渲染结果为空", field="source")
        if len(text) > MAX_RENDERED_CHARS:
            raise ValidationError(f"模板渲染结果超过 {MAX_RENDERED_CHARS} 个字符", field="source")
        return template

    def forget(self, merchant_id: int) -> None:
        """Drop a merchant's cached overrides (after one is saved in this process)."""
        config_cache.forget(merchant_id, "replies")

    async def _merchant_overrides(self, merchant_id: int) -> dict[str, jinja2.Template]:
        return await config_cache.cached(
            ("replies", merchant_id, id(self)), lambda: self._load_overrides(merchant_id)
        )

    async def _load_overrides(self, merchant_id: int) -> dict[str, jinja2.Template]:
        rows = await ReplyTemplate.filter(merchant_id=merchant_id).values_list("name", "source")
        templates = {}
        for name, source in rows:
            try:  # rows saved before today's rules, or written around the API, are checked here too
                check_constructs(self.sandbox.parse(source))
                templates[name] = self.sandbox.from_string(source)
            except jinja2.TemplateError:
                log.warning(
                    "reply override refused; using the built-in",
                    extra={"merchant_id": merchant_id, "template": name},
                )
        return templates
