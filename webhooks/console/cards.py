"""Console page of service cards (次卡 / 期限卡): the card products, creating one (admins), and granting a
card to a member with a reason (managers), through the service-cards API's handlers."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from models.staff import StaffRole
from webhooks import service_cards
from webhooks.console.base import (
    Refusal,
    api,
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
KINDS = {"count": "次卡", "time": "期限卡"}


async def _page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
    granted: Any = None,
) -> web.Response:
    found = await api(request, console, service_cards.list_products)
    context = {
        "products": found.products,
        "kinds": KINDS,
        "errors": errors or {},
        "values": values or {},
        "grant_key": secrets.token_hex(12),
        "granted": granted,
        "created": request.query.get("created"),
    }
    return render(request, "cards.html", console, context, status=status, section="programme")


@routes.get("/admin/cards")
@page()
async def cards(request: web.Request, console: Console) -> web.StreamResponse:
    return await _page(request, console)


def _again(request: web.Request, console: Console, values: dict[str, str]) -> Refusal:
    """The cards page again after a refused form: the errors next to their fields, `values` kept."""

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _page(request, console, errors=errors, values=values, status=400)

    return refused


@routes.post("/admin/cards/products")
@page(StaffRole.ADMIN)
async def create_product(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)
    values = present(data, "kind", "name", "service", "uses", "valid_days", "price")
    raw: dict[str, Any] = {
        "kind": values.get("kind", ""),
        "name": values.get("name", ""),
        "service": values.get("service", ""),
        "valid_days": whole_number(values.get("valid_days", "")),
        "active": data.get("active") == "true",
    }
    if "uses" in values:
        raw["uses"] = whole_number(values["uses"])
    if "price" in values:
        raw["price_fen"] = yuan_to_fen(values["price"])

    async def attempt() -> web.StreamResponse:
        body = parse(service_cards.CardProductIn, raw)
        created = await api(request, console, service_cards.create_product, body=body)
        return redirect(request, f"/admin/cards?created={created.id}")

    return await submit(attempt, _again(request, console, data), prefix="product")


@routes.post("/admin/cards/grant")
@page()
async def grant(request: web.Request, console: Console) -> web.StreamResponse:
    """Give a member a card free of charge, with a reason (once per form)."""
    data = await form(request)
    raw = {
        "member_code": data.get("member_code", "").strip(),
        "product_id": whole_number(data.get("product_id", "")),
        "reason": data.get("reason", "").strip(),
        "idempotency_key": data.get("key", ""),
    }

    async def attempt() -> web.StreamResponse:
        body = parse(service_cards.CardGrantIn, raw)
        granted = await api(request, console, service_cards.grant, body=body)
        return await _page(request, console, granted=granted)

    return await submit(attempt, _again(request, console, data), prefix="grant")
