"""Console page of one tag: rename it, change an automatic tag's rule (only that tag is recomputed, in the
background), and delete it after a confirmation (admins; refused while a segment uses it) — the tags API's
`update_tag` and `delete_tag`, which audit-log the change."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from models.staff import StaffRole
from webhooks import admin_tags
from webhooks.console.base import EditPage, FormErrors, api, form, page, parse, redirect, submit
from webhooks.console.security import Console

routes = web.RouteTableDef()


def _path(request: web.Request) -> admin_tags.TagPath:
    return parse(admin_tags.TagPath, {"tag_id": request.match_info["tag_id"]})


def tag_values(tag: admin_tags.TagOut) -> dict[str, str]:
    rule = json.dumps(tag.rule, ensure_ascii=False, indent=2) if tag.rule is not None else ""
    return {"name": tag.name, "rule": rule}


TAG_PAGE: EditPage[admin_tags.TagOut] = EditPage(
    "tag_edit.html",
    "segments",
    "t",
    load=lambda request, console: api(request, console, admin_tags.get_tag, path=_path(request)),
    values_of=lambda tag, _: tag_values(tag),
)


@routes.get(r"/admin/tags/{tag_id:\d+}")
@page()
async def tag_page(request: web.Request, console: Console) -> web.StreamResponse:
    """The tag's form, filled with its name and (an automatic tag) its rule."""
    return await TAG_PAGE.show(request, console)


def tag_patch(data: dict[str, str], automatic: bool) -> dict[str, Any]:
    patch: dict[str, Any] = {"name": data.get("name", "").strip()}
    if automatic:
        try:
            patch["rule"] = json.loads(data.get("rule", ""))
        except json.JSONDecodeError as exc:
            raise FormErrors({"rule": f"JSON 格式不正确（第 {exc.lineno} 行）"}) from None
    return patch


@routes.post(r"/admin/tags/{tag_id:\d+}")
@page()
async def save_tag(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)
    current = await api(request, console, admin_tags.get_tag, path=_path(request))

    async def attempt() -> web.StreamResponse:
        body = parse(admin_tags.TagPatch, tag_patch(data, current.kind == "auto"))
        await api(request, console, admin_tags.update_tag, body=body, path=_path(request))
        return redirect(request, f"/admin/tags?saved={current.id}")

    async def refused(found: dict[str, str]) -> web.StreamResponse:
        errors = {("rule" if key.startswith("rule") else key): message for key, message in found.items()}
        return await TAG_PAGE.show(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused, passes=(403, 404))


@routes.post(r"/admin/tags/{tag_id:\d+}/delete")
@page(StaffRole.ADMIN)
async def delete_tag(request: web.Request, console: Console) -> web.StreamResponse:
    """Delete the tag: its members' history records the removal; refused while a segment uses it."""

    async def attempt() -> web.StreamResponse:
        await api(request, console, admin_tags.delete_tag, path=_path(request))
        return redirect(request, "/admin/tags?deleted=1")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        shown = {"delete": next(iter(errors.values()))}
        return await TAG_PAGE.show(request, console, errors=shown, status=400)

    return await submit(attempt, refused, passes=(403, 404))
