"""Console page of the points mall's orders: newest first, by status (待发货 first to hand), and shipping
an order to ship with its carrier and tracking number (managers) — the admin mall API's `list_orders`
and `ship`, which checks the order is still to ship and audit-logs the shipment."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from handlers.mall.orders import STATUS_LABELS
from webhooks import admin_mall
from webhooks.console.base import api, form, page, parse, present, redirect, render, submit
from webhooks.console.security import Console

routes = web.RouteTableDef()


async def _page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    found = await api(request, console, admin_mall.list_orders)  # reads ?status=&cursor= itself
    search = present(request.query, "status")
    context: dict[str, Any] = {
        "orders": found.items,
        "labels": {str(key): label for key, label in STATUS_LABELS.items()},
        "search": search,
        "next_url": f"/admin/mall/orders?{urlencode({**search, 'cursor': found.next_cursor})}"
        if found.next_cursor
        else None,
        "errors": errors or {},
        "values": values or {},
        "shipped": request.query.get("shipped"),
    }
    return render(request, "mall_orders.html", console, context, status=status, section="programme")


@routes.get("/admin/mall/orders")
@page()
async def orders(request: web.Request, console: Console) -> web.StreamResponse:
    """The mall's orders newest first (`?status=to_ship`), one keyset page at a time."""
    return await _page(request, console)


@routes.post(r"/admin/mall/orders/{order_id:\d+}/ship")
@page()
async def ship(request: web.Request, console: Console) -> web.StreamResponse:
    """Mark an order to ship as shipped, with the carrier and the tracking number."""
    data = await form(request)
    order_id = request.match_info["order_id"]

    async def attempt() -> web.StreamResponse:
        path = parse(admin_mall.OrderPath, {"order_id": order_id})
        body = parse(admin_mall.ShipIn, present(data, "carrier", "tracking_no"))
        await api(request, console, admin_mall.ship, body=body, path=path)
        return redirect(request, f"/admin/mall/orders?status=to_ship&shipped={order_id}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _page(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused, prefix=f"ship{order_id}")
