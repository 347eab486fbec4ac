"""Console page of one store: its name and address edited through the stores API's replace (its code is
fixed once created: coupons and promotions name stores by it); admins, audit-logged by the API."""

from __future__ import annotations

from aiohttp import web

from models.staff import StaffRole
from webhooks import admin_stores
from webhooks.console.base import api, form, page, parse, redirect, render, submit
from webhooks.console.security import Console

routes = web.RouteTableDef()


def _path(request: web.Request) -> admin_stores.StorePath:
    return parse(admin_stores.StorePath, {"store_id": request.match_info["store_id"]})


async def _store_page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    store = await api(request, console, admin_stores.get_store, path=_path(request))
    context = {
        "s": store,
        "errors": errors or {},
        "values": values if values is not None else {"name": store.name, "address": store.address},
    }
    return render(request, "store_edit.html", console, context, status=status, section="org")


@routes.get(r"/admin/stores/{store_id:\d+}")
@page(StaffRole.ADMIN)
async def store_page(request: web.Request, console: Console) -> web.StreamResponse:
    """The store's form, filled with its name and address."""
    return await _store_page(request, console)


@routes.post(r"/admin/stores/{store_id:\d+}")
@page(StaffRole.ADMIN)
async def save_store(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        fields = {name: data.get(name, "").strip() for name in ("name", "address")}
        body = parse(admin_stores.StoreFieldsIn, fields)
        await api(request, console, admin_stores.put_store, body=body, path=_path(request))
        return redirect(request, "/admin/stores?done=edit")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _store_page(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused, prefix="store", passes=(403, 404))
