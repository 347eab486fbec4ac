"""Console page of the product catalogue: search, add, edit and delete a product (admins), and import a
CSV/XLSX file with a dry run first (admins), through the products API's handlers (the import's file is
sent to the API's handler base64-encoded, as the JSON API takes it, so it is held to the same size)."""

from __future__ import annotations

import base64
from typing import Annotated, Any
from urllib.parse import urlencode

import pydantic
from aiohttp import web
from pydantic import Field

from handlers.core.errors import DomainError
from models.staff import StaffRole
from webhooks import admin_products
from webhooks.api import In
from webhooks.appkeys import RUNTIME
from webhooks.console.base import (
    EditPage,
    FormErrors,
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
    yuan_to_fen,
)
from webhooks.console.security import Console
from webhooks.forms import Upload, parse_form

routes = web.RouteTableDef()


class UploadForm(In):
    file: Annotated[Upload, Field(description="a .csv or .xlsx file")]
    dry_run: bool = False


async def _page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
    report: Any = None,
) -> web.Response:
    found = await api(request, console, admin_products.list_products)
    search = present(request.query, "q", "category")
    context = {
        "products": found.items,
        "next_url": f"/admin/products?{urlencode({**search, 'cursor': found.next_cursor})}"
        if found.next_cursor
        else None,
        "search": search,
        "errors": errors or {},
        "values": values or {},
        "report": report,
        "created": request.query.get("created"),
        "saved": request.query.get("saved"),
        "deleted": request.query.get("deleted"),
    }
    return render(request, "products.html", console, context, status=status, section="programme")


def _again(request: web.Request, console: Console, values: dict[str, str]) -> Refusal:
    """The products page again after a refused form: the errors next to their fields, `values` kept."""

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _page(request, console, errors=errors, values=values, status=400)

    return refused


@routes.get("/admin/products")
@page()
async def products(request: web.Request, console: Console) -> web.StreamResponse:
    """Products by SKU prefix or name (`?q=`), category; keyset pages."""
    return await _page(request, console)


def product_body(data: dict[str, str]) -> dict[str, Any]:
    """A product's form as the API's `ProductFieldsIn` (prices in yuan; no cost: unknown)."""
    values = present(data, "name", "category", "price", "cost")
    raw: dict[str, Any] = {
        "name": values.get("name", ""),
        "category": values.get("category", ""),
        "price_fen": yuan_to_fen(values.get("price", "")),
        "active": data.get("active") == "true",
    }
    if "cost" in values:
        raw["cost_fen"] = yuan_to_fen(values["cost"])
    return raw


@routes.post("/admin/products")
@page(StaffRole.ADMIN)
async def create_product(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)
    raw = {"sku": data.get("sku", "").strip(), **product_body(data)}

    async def attempt() -> web.StreamResponse:
        body = parse(admin_products.ProductCreateIn, raw)
        created = await api(request, console, admin_products.create_product, body=body)
        return redirect(request, f"/admin/products?created={created.id}")

    return await submit(attempt, _again(request, console, data), prefix="product")


@routes.post("/admin/products/import")
@page(StaffRole.ADMIN)
async def import_products(request: web.Request, console: Console) -> web.StreamResponse:
    """Check (dry run) or import a file; with any rejected row nothing is written and every problem is
    listed with its row and field."""
    try:
        upload = await parse_form(request, UploadForm)
    except (DomainError, pydantic.ValidationError):
        errors = {"import.file": "请选择要导入的 CSV 或 XLSX 文件"}
        return await _page(request, console, errors=errors, status=400)

    async def attempt() -> web.StreamResponse:
        name = upload.file.filename.lower()
        kind = "xlsx" if name.endswith(".xlsx") else "csv"
        data = upload.file.file.read()
        limit = request.app[RUNTIME].max_body_bytes * 3 // 4 - 1024
        if len(data) > limit:
            raise FormErrors({"file": f"文件过大（不能超过 {limit // 1024} KB），请分批导入"})
        body = parse(
            admin_products.ImportIn,
            {"format": kind, "file": base64.b64encode(data).decode(), "dry_run": upload.dry_run},
        )
        report = await api(request, console, admin_products.import_products, body=body)
        return await _page(request, console, report=report)

    try:
        return await submit(attempt, _again(request, console, {}), prefix="import")
    finally:
        upload.file.close()


# One product: edit, delete -----------------------------------------------------------------------


def _path(request: web.Request) -> admin_products.ProductPath:
    return parse(admin_products.ProductPath, {"product_id": request.match_info["product_id"]})


def product_values(product: admin_products.ProductOut) -> dict[str, str]:
    return {
        "name": product.name,
        "category": product.category,
        "price": fen_to_yuan(product.price_fen).replace(",", ""),
        "cost": "" if product.cost_fen is None else fen_to_yuan(product.cost_fen).replace(",", ""),
        "active": "true" if product.active else "",
    }


PRODUCT_PAGE: EditPage[admin_products.ProductOut] = EditPage(
    "product.html",
    "programme",
    "p",
    load=lambda request, console: api(request, console, admin_products.get_product, path=_path(request)),
    values_of=lambda product, _: product_values(product),
)


@routes.get(r"/admin/products/{product_id:\d+}")
@page(StaffRole.ADMIN)
async def product_page(request: web.Request, console: Console) -> web.StreamResponse:
    """A product's form, filled with its current fields (its SKU is fixed)."""
    return await PRODUCT_PAGE.show(request, console)


@routes.post(r"/admin/products/{product_id:\d+}")
@page(StaffRole.ADMIN)
async def save_product(request: web.Request, console: Console) -> web.StreamResponse:
    """Replace the product's fields through the API; recorded purchases keep what they copied."""
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(admin_products.ProductFieldsIn, product_body(data))
        saved = await api(request, console, admin_products.put_product, body=body, path=_path(request))
        return redirect(request, f"/admin/products?saved={saved.id}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await PRODUCT_PAGE.show(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused, prefix="product", passes=(403, 404))


@routes.post(r"/admin/products/{product_id:\d+}/delete")
@page(StaffRole.ADMIN)
async def delete_product(request: web.Request, console: Console) -> web.StreamResponse:
    """Delete the product (the page offers taking it off sale instead: uncheck 在售)."""
    await api(request, console, admin_products.delete_product, path=_path(request))
    return redirect(request, "/admin/products?deleted=1")
