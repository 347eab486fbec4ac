"""Admin JSON API of the product catalogue: list and read (managers), create, replace, delete and import
from CSV/XLSX (admins). Every change is audit-logged; `handlers.products.imports` describes the file."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from handlers.core.errors import ValidationError
from handlers.products import catalogue, imports
from models.product import Product
from webhooks.api import Call, In, IntId, Line, Out, Routes
from webhooks.auth import ADMIN, MANAGER

routes = Routes("admin_products")
Fen = Annotated[StrictInt, Field(ge=0, le=catalogue.MAX_PRICE_FEN)]


class ProductPath(In):
    product_id: IntId


class ProductQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    q: Annotated[Line, Field(min_length=1, max_length=64)] | None = None
    category: Annotated[Line, Field(max_length=catalogue.MAX_CATEGORY)] | None = None
    active: bool | None = None
    cursor: IntId | None = None
    limit: Annotated[int, Field(ge=1, le=catalogue.MAX_PAGE)] = 50


class ProductFieldsIn(In):
    name: Annotated[Line, Field(min_length=1, max_length=catalogue.MAX_NAME)]
    category: Annotated[Line, Field(max_length=catalogue.MAX_CATEGORY)] = ""
    price_fen: Fen
    cost_fen: Fen | None = Field(default=None, description="unit cost; null: unknown")
    active: StrictBool = True

    def to_input(self) -> catalogue.ProductInput:
        return catalogue.ProductInput(**self.model_dump())


class ProductCreateIn(ProductFieldsIn):
    sku: Annotated[
        str, Field(pattern=catalogue.SKU.pattern, description="unique per merchant; fixed once created")
    ]

    def to_input(self) -> catalogue.ProductInput:
        return catalogue.ProductInput(**self.model_dump(exclude={"sku"}))


class ProductOut(Out):
    id: int
    sku: str
    name: str
    category: str
    price_fen: int
    cost_fen: int | None
    active: bool
    created_at: datetime
    updated_at: datetime


class ProductsOut(Out):
    items: list[ProductOut]
    next_cursor: int | None = Field(description="pass as ?cursor= for the next page; null at the end")


class ImportIn(In):
    format: Literal["csv", "xlsx"]
    file: Annotated[str, Field(min_length=1, description="the file's bytes, base64-encoded")]
    dry_run: StrictBool = Field(default=False, description="check and report only; nothing is written")


class ProblemOut(Out):
    row: int = Field(description="the row number a spreadsheet shows (the header is row 1)")
    field: str
    message: str


class ImportOut(Out):
    dry_run: bool
    applied: bool = Field(description="false: nothing was written (a dry run, or rejected rows)")
    rows: int = Field(description="data rows read (blank rows are skipped)")
    created: int
    updated: int
    unchanged: int
    rejected_rows: int
    problems: list[ProblemOut] = Field(description=f"at most {imports.MAX_PROBLEMS}, in file order")
    ignored_columns: list[str] = Field(description="headers that name no product field")


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


def product_out(product: Product) -> ProductOut:
    return ProductOut(**{name: getattr(product, name) for name in ProductOut.model_fields})


@routes.get("/api/admin/products", response=ProductsOut, auth=MANAGER, errors=(400,))
async def list_products(call: Call[None, None]) -> ProductsOut:
    """Products by id (?q= SKU prefix or part of the name, &category=&active=&cursor=&limit=1..200)."""
    query = ProductQuery.model_validate(dict(call.request.query))
    page, cursor = await catalogue.list_products(
        call.merchant.id,
        query=query.q,
        category=query.category,
        active=query.active,
        cursor=query.cursor,
        limit=query.limit,
    )
    return ProductsOut(items=[product_out(p) for p in page], next_cursor=cursor)


@routes.post(
    "/api/admin/products", body=ProductCreateIn, response=ProductOut, status=201, auth=ADMIN, errors=(409,)
)
async def create_product(call: Call[ProductCreateIn, None]) -> ProductOut:
    """Add a product; 409 when the SKU exists."""
    product = await catalogue.create_product(
        call.merchant.id, call.body.sku, call.body.to_input(), actor=_actor(call)
    )
    return product_out(product)


@routes.get("/api/admin/products/{product_id}", path_model=ProductPath, response=ProductOut, auth=MANAGER)
async def get_product(call: Call[None, ProductPath]) -> ProductOut:
    """One product."""
    return product_out(await catalogue.get_product(call.merchant.id, call.path.product_id))


@routes.put(
    "/api/admin/products/{product_id}",
    path_model=ProductPath,
    body=ProductFieldsIn,
    response=ProductOut,
    auth=ADMIN,
)
async def put_product(call: Call[ProductFieldsIn, ProductPath]) -> ProductOut:
    """Replace a product's fields (its SKU stays); recorded purchases keep what they copied."""
    product = await catalogue.update_product(
        call.merchant.id, call.path.product_id, call.body.to_input(), actor=_actor(call)
    )
    return product_out(product)


@routes.delete("/api/admin/products/{product_id}", path_model=ProductPath, auth=ADMIN)
async def delete_product(call: Call[None, ProductPath]) -> None:
    """Delete a product (to stop selling it but keep it, set `active` false instead)."""
    await catalogue.delete_product(call.merchant.id, call.path.product_id, actor=_actor(call))


@routes.post("/api/admin/products/import", body=ImportIn, response=ImportOut, auth=ADMIN)
async def import_products(call: Call[ImportIn, None]) -> ImportOut:
    """Import products from a CSV or XLSX file, idempotent per SKU; with rejected rows nothing is written."""
    try:
        data = base64.b64decode(call.body.file, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("file 须为 base64 编码的文件内容", field="file") from None
    report = await imports.import_products(
        call.merchant.id,
        data,
        call.body.format,
        dry_run=call.body.dry_run,
        actor=_actor(call),
        now=datetime.now(UTC),
    )
    return ImportOut(
        dry_run=report.dry_run,
        applied=report.applied,
        rows=report.rows,
        created=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
        rejected_rows=report.rejected_rows,
        problems=[ProblemOut(row=p.row, field=p.field, message=p.message) for p in report.problems],
        ignored_columns=list(report.ignored_columns),
    )
