"""Console pages of the points mall: items and their stock, flash sales (秒杀) and group deals (拼团).

Each form is parsed into the admin API's request model and given to that endpoint's handler (stock moves,
sale and deal creation are the mall use cases', with their checks and idempotency keys).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from models.staff import StaffRole
from webhooks import admin_analytics, admin_mall, coupons, mall_deals
from webhooks.console.base import (
    Refusal,
    api,
    fen_to_yuan,
    form,
    page,
    parse,
    present,
    redirect,
    render,
    submit,
    whole_number,
    yuan_to_fen,
)
from webhooks.console.security import Console

routes = web.RouteTableDef()

# Mall items --------------------------------------------------------------------------------------

ITEM_KINDS = {"pickup": "到店自提", "shipped": "快递发货", "coupon": "优惠券", "stored_value": "储值"}


async def mall_page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    items = await api(request, console, admin_mall.list_items)
    templates = await api(request, console, coupons.list_templates)
    sales = await api(request, console, mall_deals.list_flash_sales)
    deals = await api(request, console, mall_deals.list_group_deals)
    context = {
        "items": items.items,
        "sales": sales.items,
        "deals": deals.items,
        "templates": templates.items,
        "kinds": ITEM_KINDS,
        "errors": errors or {},
        "values": values or {},
        "stock_key": secrets.token_hex(12),
        "done": request.query.get("done"),
    }
    return render(request, "mall.html", console, context, status=status, section="programme")


def _again(request: web.Request, console: Console, values: dict[str, str]) -> Refusal:
    """The mall page again after a refused form: the errors next to their fields, `values` kept."""

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await mall_page(request, console, errors=errors, values=values, status=400)

    return refused


@routes.get("/admin/mall")
@page()
async def mall_items(request: web.Request, console: Console) -> web.StreamResponse:
    """The points mall's items with their stock; restock or adjust; create an item (admins)."""
    return await mall_page(request, console)


def item_body(data: dict[str, str]) -> dict[str, Any]:
    values = present(data, *data.keys())
    body: dict[str, Any] = {
        "kind": values.get("kind", ""),
        "name": values.get("name", ""),
        "active": data.get("active") == "true",
    }
    for name in ("description", "category"):
        if name in values:
            body[name] = values[name]
    for name in (
        "price_points",
        "stock",
        "limit_per_member",
        "limit_per_day",
        "pickup_days",
        "coupon_template_id",
    ):
        if name in values:
            body[name] = whole_number(values[name])
    for name in ("cash_fen", "stored_value_fen"):
        if name in values:
            body[name] = yuan_to_fen(values[name])
    return body


@routes.post("/admin/mall/items")
@page(StaffRole.ADMIN)
async def create_item(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(admin_mall.ItemCreateIn, item_body(data))
        await api(request, console, admin_mall.create_item, body=body)
        return redirect(request, "/admin/mall?done=item")

    return await submit(attempt, _again(request, console, data), prefix="item")


@routes.post(r"/admin/mall/items/{item_id:\d+}/stock")
@page()
async def item_stock(request: web.Request, console: Console) -> web.StreamResponse:
    """Add stock (restock) or correct it (adjust, may be negative), once per form."""
    data = await form(request)
    item_id = request.match_info["item_id"]
    raw = {
        "delta": whole_number(data.get("delta", "")),
        "reason": data.get("reason", ""),
        "idempotency_key": data.get("key", ""),
    }

    on_item = data.get("back") == "item"  # sent from the item's own page: answer there

    async def attempt() -> web.StreamResponse:
        path = parse(admin_mall.ItemPath, {"item_id": item_id})
        body = parse(admin_mall.StockIn, raw)
        await api(request, console, admin_mall.adjust_stock, body=body, path=path)
        return redirect(
            request, f"/admin/mall/items/{item_id}?done=stock" if on_item else "/admin/mall?done=stock"
        )

    async def on_item_page(errors: dict[str, str]) -> web.StreamResponse:
        return await _item_page(request, console, errors=errors, status=400)

    refused = on_item_page if on_item else _again(request, console, data)
    return await submit(attempt, refused, prefix=f"stock{item_id}", passes=(403, 404))


# Flash sales and group deals ---------------------------------------------------------------------


def local_moment(raw: str, zone: str) -> Any:
    """A `datetime-local` input ("2026-12-06T10:00") as an aware instant of the merchant's time zone."""
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        return raw
    return moment.replace(tzinfo=ZoneInfo(zone)).isoformat() if moment.tzinfo is None else moment.isoformat()


def deal_body(data: dict[str, str], zone: str, numbers: tuple[str, ...]) -> dict[str, Any]:
    values = present(data, "item_id", "starts_at", "ends_at", *numbers)
    body: dict[str, Any] = {
        name: whole_number(values[name]) for name in ("item_id", *numbers) if name in values
    }
    for name in ("starts_at", "ends_at"):
        body[name] = local_moment(values.get(name, ""), zone)
    return body


async def _create(
    request: web.Request, console: Console, prefix: str, model: Any, handler: Any, numbers: tuple[str, ...]
) -> web.StreamResponse:
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(model, deal_body(data, console.merchant.timezone, numbers))
        await api(request, console, handler, body=body)
        return redirect(request, f"/admin/mall?done={prefix}")

    values = {f"{prefix}.{k}": v for k, v in data.items()}
    return await submit(attempt, _again(request, console, values), prefix=prefix)


@routes.post("/admin/mall/flash-sales")
@page()
async def create_flash_sale(request: web.Request, console: Console) -> web.StreamResponse:
    """A flash sale: its units move from the item's stock; live between its start and end."""
    numbers = ("price_points", "stock", "limit_per_member")
    return await _create(
        request, console, "sale", mall_deals.FlashSaleIn, mall_deals.create_flash_sale, numbers
    )


@routes.post("/admin/mall/group-deals")
@page()
async def create_group_deal(request: web.Request, console: Console) -> web.StreamResponse:
    """A group deal: the item at a price when enough members join within the hours given."""
    numbers = ("price_points", "group_size", "hours")
    return await _create(
        request, console, "deal", mall_deals.GroupDealIn, mall_deals.create_group_deal, numbers
    )


@routes.post(r"/admin/mall/items/{item_id:\d+}/active")
@page(StaffRole.ADMIN)
async def item_active(request: web.Request, console: Console) -> web.StreamResponse:
    """Put an item on or off sale: the API's replace with its current fields and `active` changed."""
    data = await form(request)
    path = parse(admin_mall.ItemPath, {"item_id": request.match_info["item_id"]})
    current = await api(request, console, admin_mall.get_item, path=path)
    fields = {name: getattr(current, name) for name in admin_mall.ItemFieldsIn.model_fields}
    body = parse(admin_mall.ItemFieldsIn, {**fields, "active": data.get("active") == "true"})
    await api(request, console, admin_mall.put_item, body=body, path=path)
    return redirect(request, "/admin/mall?done=stock")


# One item: edit its fields -----------------------------------------------------------------------


def local_input(moment: datetime | None, zone: str) -> str:
    """An instant as a `datetime-local` input shows it, in the merchant's time zone."""
    return "" if moment is None else moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M")


def _optional(number: int | None) -> str:
    return "" if number is None else str(number)


def item_values(item: admin_mall.ItemOut, zone: str) -> dict[str, str]:
    """An item as its edit form shows it: yuan for fen, merchant-local sale window, empty for "none"."""
    optional = {
        "limit_per_member": item.limit_per_member,
        "limit_per_day": item.limit_per_day,
        "coupon_template_id": item.coupon_template_id,
    }
    return {
        "name": item.name,
        "description": item.description,
        "image_url": item.image_url,
        "category": item.category,
        "price_points": str(item.price_points),
        "cash_fen": fen_to_yuan(item.cash_fen).replace(",", "") if item.cash_fen else "",
        "stored_value_fen": fen_to_yuan(item.stored_value_fen).replace(",", "")
        if item.stored_value_fen
        else "",
        "min_tier_rank": str(item.min_tier_rank),
        "pickup_days": str(item.pickup_days),
        "sort": str(item.sort),
        "sale_starts_at": local_input(item.sale_starts_at, zone),
        "sale_ends_at": local_input(item.sale_ends_at, zone),
        "active": "true" if item.active else "",
        **{name: _optional(value) for name, value in optional.items()},
    }


def item_fields_body(data: dict[str, str], zone: str) -> dict[str, Any]:
    """The edit form as the API's `ItemFieldsIn` (the kind and the stock are not editable here)."""
    body = item_body(data)
    body.pop("kind")
    body.pop("stock", None)
    values = present(data, "image_url", "min_tier_rank", "sort", "sale_starts_at", "sale_ends_at")
    if "image_url" in values:
        body["image_url"] = values["image_url"]
    for name in ("min_tier_rank", "sort"):
        if name in values:
            body[name] = whole_number(values[name])
    for name in ("sale_starts_at", "sale_ends_at"):
        if name in values:
            body[name] = local_moment(values[name], zone)
    return body


def _item_path(request: web.Request) -> admin_mall.ItemPath:
    return parse(admin_mall.ItemPath, {"item_id": request.match_info["item_id"]})


async def _item_page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    threshold: str | None = None,
    status: int = 200,
) -> web.Response:
    item = await api(request, console, admin_mall.get_item, path=_item_path(request))
    templates = await api(request, console, coupons.list_templates)
    context = {
        "item": item,
        "kinds": ITEM_KINDS,
        "templates": templates.items,
        "errors": errors or {},
        "values": values if values is not None else item_values(item, console.merchant.timezone),
        "threshold": threshold if threshold is not None else _optional(item.low_stock_threshold),
        "stock_key": secrets.token_hex(12),
        "done": request.query.get("done"),
    }
    return render(request, "mall_item.html", console, context, status=status, section="programme")


@routes.get(r"/admin/mall/items/{item_id:\d+}")
@page()
async def item_page(request: web.Request, console: Console) -> web.StreamResponse:
    """One item: its fields (a form for admins, filled with the current values) and its stock."""
    return await _item_page(request, console)


@routes.post(r"/admin/mall/items/{item_id:\d+}")
@page(StaffRole.ADMIN)
async def save_item(request: web.Request, console: Console) -> web.StreamResponse:
    """Replace the item's fields through the API (its kind and stock stay); audit-logged there."""
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(admin_mall.ItemFieldsIn, item_fields_body(data, console.merchant.timezone))
        await api(request, console, admin_mall.put_item, body=body, path=_item_path(request))
        return redirect(request, "/admin/mall?done=edit")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _item_page(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused, prefix="item", passes=(403, 404))


@routes.post(r"/admin/mall/items/{item_id:\d+}/low-stock")
@page()
async def low_stock(request: web.Request, console: Console) -> web.StreamResponse:
    """Set the item's low-stock threshold (库存预警: the dashboard flags it at or below), or clear it."""
    data = await form(request)
    raw = data.get("threshold", "").strip()

    async def attempt() -> web.StreamResponse:
        path = parse(admin_analytics.ItemPath, {"item_id": request.match_info["item_id"]})
        body = parse(admin_analytics.ThresholdIn, {"threshold": whole_number(raw) if raw else None})
        await api(request, console, admin_analytics.set_low_stock, body=body, path=path)
        return redirect(request, f"/admin/mall/items/{path.item_id}?done=low")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _item_page(request, console, errors=errors, threshold=raw, status=400)

    return await submit(attempt, refused, prefix="low", passes=(403, 404))
