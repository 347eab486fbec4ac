"""Rendering of jinja2 templates, with per-merchant overrides of chat reply templates.

Built-in templates live under templates/. A merchant may override any `replies/` template; the
override is sandboxed (merchant-supplied source is untrusted), validated when saved, and cached
per process for a short time so the hot chat path does not query the database on every message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from handlers.errors import ValidationError
from models.merchant import ReplyTemplate

REPLY_DIR = "replies"
OVERRIDE_TTL_SECONDS = 30.0
MAX_OVERRIDE_CHARS = 4000


@dataclass(slots=True)
class _Overrides:
    loaded_at: float
    templates: dict[str, jinja2.Template]


class Renderer:
    def __init__(self, root: Path) -> None:
        loader = jinja2.FileSystemLoader(str(root))
        self.text = jinja2.Environment(
            loader=loader, autoescape=False, undefined=jinja2.StrictUndefined,  # noqa: S701 - plain-text chat
            trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
        )
        self.html = jinja2.Environment(
            loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
        )
        self.sandbox = SandboxedEnvironment(
            autoescape=False, undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True,
        )
        self._root = root
        self._overrides: dict[int, _Overrides] = {}

    def reply_names(self) -> list[str]:
        folder = self._root / REPLY_DIR
        return sorted(p.name.removesuffix(".txt.j2") for p in folder.glob("*.txt.j2"))

    async def reply(self, merchant_id: int, name: str, **context: Any) -> str:
        """Render chat reply `name` for a merchant: its override if it has one, else the built-in."""
        overrides = await self._merchant_overrides(merchant_id)
        template = overrides.get(name) or self.text.get_template(f"{REPLY_DIR}/{name}.txt.j2")
        return template.render(**context).strip()

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
            template = self.sandbox.from_string(source)
            template.render()  # undefined names render empty; sandbox violations raise here
        except jinja2.TemplateError as exc:
            raise ValidationError(f"模板无法解析: {exc}", field="source") from exc
        return template

    def forget(self, merchant_id: int) -> None:
        """Drop a merchant's cached overrides (after one is saved in this process)."""
        self._overrides.pop(merchant_id, None)

    async def _merchant_overrides(self, merchant_id: int) -> dict[str, jinja2.Template]:
        cached = self._overrides.get(merchant_id)
        now = time.monotonic()
        if cached is not None and now - cached.loaded_at < OVERRIDE_TTL_SECONDS:
            return cached.templates
        rows = await ReplyTemplate.filter(merchant_id=merchant_id).values_list("name", "source")
        templates = {name: self.sandbox.from_string(source) for name, source in rows}
        self._overrides[merchant_id] = _Overrides(now, templates)
        return templates
