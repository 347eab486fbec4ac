"""Console actions of the notices page beyond editing a text: the quiet hours (免打扰时段, in which notices
that are not urgent wait) and resetting a notice kind to its built-in defaults, through the notices API's
`quiet_hours` and `reset_setting` (admins, audit-logged there)."""

from __future__ import annotations

from aiohttp import web

from models.staff import StaffRole
from webhooks import notices
from webhooks.console.base import api, form, page, parse, redirect, render, submit
from webhooks.console.security import Console

routes = web.RouteTableDef()


@routes.post("/admin/programme/quiet-hours")
@page(StaffRole.ADMIN)
async def quiet_hours(request: web.Request, console: Console) -> web.StreamResponse:
    """Merchant-local quiet hours as two clock times (the same start and end: none)."""
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(
            notices.QuietIn, {"start": data.get("start", "").strip(), "end": data.get("end", "").strip()}
        )
        await api(request, console, notices.quiet_hours, body=body)
        return redirect(request, "/admin/programme/notices?saved=quiet")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        found = await api(request, console, notices.list_settings)
        context = {"settings": found, "saved": None, "errors": {"quiet": errors}, "values": {"quiet": data}}
        return render(request, "notices.html", console, context, status=400, section="programme")

    return await submit(attempt, refused)


@routes.post(r"/admin/programme/notices/{kind:[a-z_]{1,32}}/reset")
@page(StaffRole.ADMIN)
async def reset(request: web.Request, console: Console) -> web.StreamResponse:
    """Back to the built-in text, channels and switch for this notice kind."""
    path = parse(notices.KindPath, {"kind": request.match_info["kind"]})
    await api(request, console, notices.reset_setting, path=path)
    return redirect(request, f"/admin/programme/notices?saved={path.kind}#notice-{path.kind}")
