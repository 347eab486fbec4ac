"""Console page of the marketing caps: how many campaign messages (all channels) and SMS one member may
receive a day, shown beside the limits WeChat itself sets, and edited by an admin (the API's
PUT /api/admin/marketing-caps; errors next to the field, input kept)."""

from __future__ import annotations

from aiohttp import web

from handlers.rules import campaigns as rules
from models.staff import StaffRole
from webhooks import admin_campaigns
from webhooks.console.base import api, form, page, parse, redirect, render, submit, whole_number
from webhooks.console.security import Console

routes = web.RouteTableDef()
FIELDS = ("marketing_per_day", "sms_per_day")


async def _page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    caps = await api(request, console, admin_campaigns.get_caps)
    merchant = console.merchant
    context = {
        "values": values or {name: str(getattr(caps, name)) for name in FIELDS},
        "errors": errors or {},
        "saved": request.query.get("saved") == "1",
        "mass_per_month": rules.MASS_PER_MEMBER_MONTH,
        "quiet": (merchant.quiet_start_minute, merchant.quiet_end_minute),
    }
    return render(request, "marketing_caps.html", console, context, status=status, section="campaigns")


@routes.get("/admin/marketing-caps")
@page()
async def caps_page(request: web.Request, console: Console) -> web.StreamResponse:
    return await _page(request, console)


@routes.post("/admin/marketing-caps")
@page(StaffRole.ADMIN)
async def caps_save(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(admin_campaigns.CapsIn, {name: whole_number(data.get(name, "")) for name in FIELDS})
        await api(request, console, admin_campaigns.put_caps, body=body)
        return redirect(request, "/admin/marketing-caps?saved=1")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _page(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused)
