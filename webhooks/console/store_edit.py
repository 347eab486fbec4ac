"""Console page of one store: its name and address edited through the stores API's replace (its code is
fixed once created: coupons and promotions name stores by it); admins, audit-logged by the API."""

from __future__ import annotations

from aiohttp import web

from models.staff import StaffRole
from webhooks import admin_stores
from webhooks.console.base import EditPage, api, form, page, parse, redirect, submit
from webhooks.console.security import Console

routes = web.RouteTableDef()


def _path(request: web.Request) -> admin_stores.StorePath:
    return parse(admin_stores.StorePath, {"store_id": request.match_info["store_id"]})


STORE_PAGE: EditPage[admin_stores.AdminStoreOut] = EditPage(
    "store_edit.html",
    "org",
    "s",
    load=lambda request, console: api(request, console, admin_stores.get_store, path=_path(request)),
    values_of=lambda store, _: {"name": store.name, "address": store.address},
)


@routes.get(r"/admin/stores/{store_id:\d+}")
@page(StaffRole.ADMIN)
async def store_page(request: web.Request, console: Console) -> web.StreamResponse:
    """The store's form, filled with its name and address."""
    return await STORE_PAGE.show(request, console)


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
        return await STORE_PAGE.show(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused, prefix="store", passes=(403, 404))
