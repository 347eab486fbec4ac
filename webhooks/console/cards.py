"""Console page of service cards (次卡 / 期限卡): the card products, creating, editing and taking one off
sale (admins), and granting a card to a member with a reason (managers), through the service-cards API's
handlers."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from handlers.core.errors import ErrorCode
from models.staff import StaffRole
from webhooks import service_cards
from webhooks.api import ApiError
from webhooks.console.base import (
    EditPage,
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
        "saved": request.query.get("saved"),
        "stopped": request.query.get("stopped"),
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


def product_body(data: dict[str, str], kind: str) -> dict[str, Any]:
    """A card product's form as the API's `CardProductIn` (price in yuan)."""
    values = present(data, "name", "service", "uses", "valid_days", "price")
    raw: dict[str, Any] = {
        "kind": kind,
        "name": values.get("name", ""),
        "service": values.get("service", ""),
        "valid_days": whole_number(values.get("valid_days", "")),
        "active": data.get("active") == "true",
    }
    if "uses" in values:
        raw["uses"] = whole_number(values["uses"])
    if "price" in values:
        raw["price_fen"] = yuan_to_fen(values["price"])
    return raw


@routes.post("/admin/cards/products")
@page(StaffRole.ADMIN)
async def create_product(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)
    raw = product_body(data, data.get("kind", "").strip())

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


# One product: edit, take off sale ---------------------------------------------------------------


async def _product(request: web.Request, console: Console) -> service_cards.CardProductOut:
    """The product of the address (the API lists products; it has no read of one)."""
    path = parse(service_cards.ProductPath, {"product_id": request.match_info["product_id"]})
    found: service_cards.CardProductsOut = await api(request, console, service_cards.list_products)
    product = next((p for p in found.products if p.id == path.product_id), None)
    if product is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, "没有这个卡种")
    return product


def product_values(product: service_cards.CardProductOut) -> dict[str, str]:
    return {
        "name": product.name,
        "service": product.service,
        "uses": "" if product.uses is None else str(product.uses),
        "valid_days": str(product.valid_days),
        "price": fen_to_yuan(product.price_fen).replace(",", ""),
        "active": "true" if product.active else "",
    }


PRODUCT_PAGE: EditPage[service_cards.CardProductOut] = EditPage(
    "card_product.html",
    "programme",
    "p",
    load=_product,
    values_of=lambda product, _: product_values(product),
    extra={"kinds": KINDS},
)


@routes.get(r"/admin/cards/products/{product_id:\d+}")
@page(StaffRole.ADMIN)
async def product_page(request: web.Request, console: Console) -> web.StreamResponse:
    """A card product's form, filled with its current terms (its kind cannot change)."""
    return await PRODUCT_PAGE.show(request, console)


@routes.post(r"/admin/cards/products/{product_id:\d+}")
@page(StaffRole.ADMIN)
async def save_product(request: web.Request, console: Console) -> web.StreamResponse:
    """Replace the product's terms through the API; cards already issued keep theirs."""
    data = await form(request)
    current = await _product(request, console)
    path = service_cards.ProductPath(product_id=current.id)

    async def attempt() -> web.StreamResponse:
        body = parse(service_cards.CardProductIn, product_body(data, current.kind.value))
        await api(request, console, service_cards.update_product, body=body, path=path)
        return redirect(request, f"/admin/cards?saved={current.id}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await PRODUCT_PAGE.show(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused, prefix="product", passes=(403, 404))


@routes.post(r"/admin/cards/products/{product_id:\d+}/delete")
@page(StaffRole.ADMIN)
async def delete_product(request: web.Request, console: Console) -> web.StreamResponse:
    """The API's delete: the product goes off sale and is kept (issued cards refer to it)."""
    current = await _product(request, console)
    path = service_cards.ProductPath(product_id=current.id)
    await api(request, console, service_cards.delete_product, path=path)
    return redirect(request, f"/admin/cards?stopped={current.id}")
