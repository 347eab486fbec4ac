"""Console page of the credit (赊账) and invitation settings: after how many days an unpaid credit
charge is overdue (the credit API's `settings` / `set_settings`), and whether members' invite codes are
permanent or 30-day ones, with WeChat's cap on permanent codes (the invites API's settings).

Managers see the values; changing them is the APIs' own admin-only call, audit-logged there.
"""

from __future__ import annotations

from aiohttp import web

from webhooks import credit, invites
from webhooks.console.base import api, form, page, parse, redirect, render, submit, whole_number
from webhooks.console.security import Console

routes = web.RouteTableDef()
DONE = {"credit": "赊账设置已保存。", "invite": "邀请码设置已保存。"}


async def _page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    context = {
        "credit": await api(request, console, credit.settings),
        "invite": await api(request, console, invites.get_invite_settings),
        "errors": errors or {},
        "values": values or {},
        "done": DONE.get(request.query.get("done", "")),
    }
    return render(request, "credit_settings.html", console, context, status=status, section="credit")


@routes.get("/admin/credit/settings")
@page()
async def settings_page(request: web.Request, console: Console) -> web.StreamResponse:
    return await _page(request, console)


@routes.post("/admin/credit/settings/credit")
@page()
async def save_credit(request: web.Request, console: Console) -> web.StreamResponse:
    """Set the overdue days (applies to charges made after the change)."""
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(credit.CreditSettingsIn, {"overdue_days": whole_number(data.get("overdue_days", ""))})
        await api(request, console, credit.set_settings, body=body)
        return redirect(request, "/admin/credit/settings?done=credit")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _page(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused, prefix="credit")


@routes.post("/admin/credit/settings/invite")
@page()
async def save_invite(request: web.Request, console: Console) -> web.StreamResponse:
    """Choose permanent or 30-day invite codes for members (codes already made are kept)."""
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(invites.InviteSettingsIn, {"permanent": data.get("permanent", "")})
        await api(request, console, invites.put_invite_settings, body=body)
        return redirect(request, "/admin/credit/settings?done=invite")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _page(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused, prefix="invite")
