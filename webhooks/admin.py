"""Admin JSON API: the merchant's overrides of chat reply templates (role admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from handlers.core import reply_overrides
from handlers.core.templating import MAX_OVERRIDE_CHARS
from webhooks.api import Call, In, Multiline, Out, Routes
from webhooks.appkeys import RENDERER
from webhooks.auth import ADMIN

routes = Routes("admin")


class TemplatePath(In):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="built-in template name")]


class TemplateSourceIn(In):
    source: Annotated[
        Multiline, Field(min_length=1, max_length=MAX_OVERRIDE_CHARS, description="jinja2 source (sandboxed)")
    ]


class ReplyTemplateOut(Out):
    name: str
    default_source: str = Field(description="the built-in template's source")
    override: str | None = Field(description="the merchant's override, or null when the built-in is used")
    updated_at: datetime | None


class ReplyTemplateList(Out):
    templates: list[ReplyTemplateOut]


def _out(view: reply_overrides.TemplateView) -> ReplyTemplateOut:
    return ReplyTemplateOut(
        name=view.name, default_source=view.default_source, override=view.override, updated_at=view.updated_at
    )


@routes.get("/api/admin/reply-templates", response=ReplyTemplateList, auth=ADMIN)
async def list_reply_templates(call: Call[None, None]) -> ReplyTemplateList:
    """Every built-in chat reply template with this merchant's override, if any."""
    views = await reply_overrides.list_templates(call.request.app[RENDERER], call.merchant)
    return ReplyTemplateList(templates=[_out(view) for view in views])


@routes.put(
    "/api/admin/reply-templates/{name}",
    path_model=TemplatePath,
    body=TemplateSourceIn,
    response=ReplyTemplateOut,
    auth=ADMIN,
)
async def put_reply_template(call: Call[TemplateSourceIn, TemplatePath]) -> ReplyTemplateOut:
    """Override one reply template; the source must compile in the sandbox (400 with the reason)."""
    view = await reply_overrides.save_override(
        call.request.app[RENDERER], call.merchant, call.path.name, call.body.source
    )
    return _out(view)


@routes.delete(
    "/api/admin/reply-templates/{name}", path_model=TemplatePath, response=ReplyTemplateOut, auth=ADMIN
)
async def delete_reply_template(call: Call[None, TemplatePath]) -> ReplyTemplateOut:
    """Drop the override and use the built-in template again."""
    view = await reply_overrides.delete_override(call.request.app[RENDERER], call.merchant, call.path.name)
    return _out(view)
