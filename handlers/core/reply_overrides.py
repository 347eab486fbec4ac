"""A merchant's overrides of the built-in chat reply templates: list, save (validated), delete.

Saving or deleting drops the merchant's cached overrides in this process's renderer, so the change shows
at once here; other processes pick it up within the renderer's cache lifetime (30 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.exceptions import IntegrityError

from handlers.core.errors import DomainError, NotFound, ValidationError
from handlers.core.templating import REPLY_DIR, Renderer
from models.merchant import Merchant, ReplyTemplate


@dataclass(frozen=True, slots=True)
class TemplateView:
    name: str
    default_source: str
    override: str | None
    updated_at: datetime | None


def _require_known(renderer: Renderer, name: str) -> None:
    if name not in renderer.reply_names():
        raise NotFound(f"没有名为 {name} 的回复模板", field="name")


def default_source(renderer: Renderer, name: str) -> str:
    loader = renderer.text.loader
    if loader is None:
        raise RuntimeError("the renderer has no template loader")
    source, _, _ = loader.get_source(renderer.text, f"{REPLY_DIR}/{name}.txt.j2")
    return source


async def list_templates(renderer: Renderer, merchant: Merchant) -> list[TemplateView]:
    """Every built-in reply template with the merchant's override, if any."""
    rows = {row.name: row for row in await ReplyTemplate.filter(merchant_id=merchant.id)}
    views = []
    for name in renderer.reply_names():
        row = rows.get(name)
        views.append(
            TemplateView(
                name,
                default_source(renderer, name),
                row.source if row else None,
                row.updated_at if row else None,
            )
        )
    return views


async def get_template(renderer: Renderer, merchant: Merchant, name: str) -> TemplateView:
    _require_known(renderer, name)
    row = await ReplyTemplate.get_or_none(merchant_id=merchant.id, name=name)
    return TemplateView(
        name, default_source(renderer, name), row.source if row else None, row.updated_at if row else None
    )


async def save_override(renderer: Renderer, merchant: Merchant, name: str, source: str) -> TemplateView:
    """Validate (unknown name → NotFound, bad jinja → ValidationError with the reason) and store."""
    _require_known(renderer, name)
    try:
        renderer.validate_override(name, source)
    except DomainError:
        raise
    except Exception as exc:  # untrusted source: any failure of the trial render means it is unusable
        raise ValidationError(f"模板无法渲染: {type(exc).__name__}: {exc}", field="source") from exc
    now = datetime.now(UTC)
    scope = ReplyTemplate.filter(merchant_id=merchant.id, name=name)
    if not await scope.update(source=source, updated_at=now):
        try:
            await ReplyTemplate.create(merchant=merchant, name=name, source=source)
        except IntegrityError:
            await scope.update(source=source, updated_at=now)  # created concurrently: last write wins
    renderer.forget(merchant.id)
    return await get_template(renderer, merchant, name)


async def delete_override(renderer: Renderer, merchant: Merchant, name: str) -> TemplateView:
    """Go back to the built-in template (a no-op when there is no override)."""
    _require_known(renderer, name)
    await ReplyTemplate.filter(merchant_id=merchant.id, name=name).delete()
    renderer.forget(merchant.id)
    return await get_template(renderer, merchant, name)
