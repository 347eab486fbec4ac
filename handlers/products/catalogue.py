"""The product catalogue: create, read, list, replace and delete products (each change audit-logged),
and the till's lookup that turns `(sku, qty, unit price?)` lines into priced, categorised items.

A product's SKU is fixed once created (it is what imports and the till match on); everything else may
change. A purchase copies category, unit price and unit cost into its own items, so later edits or a
deletion never rewrite history.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import Conflict, NotFound, ValidationError
from handlers.rules.earn_model import Item
from models.product import Product

SKU = re.compile(r"^[A-Za-z0-9_.:/+#-]{1,64}$")
SKU_RULE = "1–64 个字母、数字或 _ . : / + # -"
MAX_NAME = 128
MAX_CATEGORY = 64
MAX_PRICE_FEN = 10**9  # ten million yuan: what a till item's unit price may be
MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class ProductInput:
    name: str
    price_fen: int
    category: str = ""
    cost_fen: int | None = None  # None: unknown
    active: bool = True


def sku_problem(sku: str) -> str | None:
    return None if SKU.match(sku) else f"SKU 须为 {SKU_RULE}"


def input_problem(data: ProductInput) -> tuple[str, str] | None:
    """(field, Chinese reason) of the first problem with `data`, or None."""
    if not data.name.strip() or len(data.name) > MAX_NAME:
        return "name", f"名称须为 1–{MAX_NAME} 个字符"
    if len(data.category) > MAX_CATEGORY:
        return "category", f"品类最多 {MAX_CATEGORY} 个字符"
    if not 0 <= data.price_fen <= MAX_PRICE_FEN:
        return "price_fen", f"售价须在 0 到 {MAX_PRICE_FEN} 分之间"
    if data.cost_fen is not None and not 0 <= data.cost_fen <= MAX_PRICE_FEN:
        return "cost_fen", f"成本须在 0 到 {MAX_PRICE_FEN} 分之间"
    return None


def _validate(data: ProductInput) -> None:
    if (problem := input_problem(data)) is not None:
        field, reason = problem
        raise ValidationError(f"{field}：{reason}", field=field)


def columns(data: ProductInput) -> dict[str, Any]:
    values = asdict(data)
    values["name"], values["category"] = data.name.strip(), data.category.strip()
    return values


async def create_product(merchant_id: int, sku: str, data: ProductInput, *, actor: str) -> Product:
    if (problem := sku_problem(sku)) is not None:
        raise ValidationError(f"sku 格式不正确：{problem}", field="sku")
    _validate(data)
    try:
        async with in_transaction():
            product = await Product.create(merchant_id=merchant_id, sku=sku, **columns(data))
            await audit_log.record(
                merchant_id, actor, "product.create", f"product:{product.id}", sku=sku, **columns(data)
            )
    except IntegrityError as exc:
        raise Conflict(f"SKU {sku} 已存在", field="sku") from exc
    return product


async def get_product(merchant_id: int, product_id: int) -> Product:
    product = await Product.get_or_none(id=product_id, merchant_id=merchant_id)
    if product is None:
        raise NotFound("商品不存在", field="product_id")
    return product


async def list_products(
    merchant_id: int,
    *,
    query: str | None,
    category: str | None,
    active: bool | None,
    cursor: int | None,
    limit: int,
) -> tuple[list[Product], int | None]:
    """One page in id order (`query` matches the SKU's start or any part of the name) and the cursor of
    the next (None at the end)."""
    rows = Product.filter(merchant_id=merchant_id)
    if query:
        rows = rows.filter(Q(sku__startswith=query) | Q(name__icontains=query))
    if category is not None:
        rows = rows.filter(category=category)
    if active is not None:
        rows = rows.filter(active=active)
    if cursor is not None:
        rows = rows.filter(id__gt=cursor)
    page = await rows.order_by("id").limit(limit + 1)
    return page[:limit], page[limit - 1].id if len(page) > limit else None


async def update_product(merchant_id: int, product_id: int, data: ProductInput, *, actor: str) -> Product:
    """Replace every field but the SKU."""
    _validate(data)
    async with in_transaction():
        product = await Product.select_for_update().get_or_none(id=product_id, merchant_id=merchant_id)
        if product is None:
            raise NotFound("商品不存在", field="product_id")
        before = {name: getattr(product, name) for name in ProductInput.__slots__}
        after = columns(data)
        if before != after:
            for name, value in after.items():
                setattr(product, name, value)
            await product.save()
            await audit_log.record(
                merchant_id, actor, "product.update", f"product:{product.id}", before=before, after=after
            )
    return product


async def delete_product(merchant_id: int, product_id: int, *, actor: str) -> None:
    async with in_transaction():
        product = await Product.select_for_update().get_or_none(id=product_id, merchant_id=merchant_id)
        if product is None:
            raise NotFound("商品不存在", field="product_id")
        await product.delete()
        await audit_log.record(merchant_id, actor, "product.delete", f"product:{product.id}", sku=product.sku)


@dataclass(frozen=True, slots=True)
class ItemLine:
    """What the till sends for one item: the SKU, how many, and the unit price when it differs from the
    catalogue's (a markdown at the till)."""

    sku: str
    qty: int
    unit_price_fen: int | None = None


@dataclass(frozen=True, slots=True)
class PricedItems:
    items: tuple[Item, ...]
    unit_costs: dict[str, int | None]  # by SKU: the catalogue's cost when the purchase was made


async def price_items(merchant_id: int, lines: Sequence[ItemLine], *, field: str = "items") -> PricedItems:
    """The lines as earn-rule items, category and default unit price from the catalogue, in one query.
    An unknown or inactive SKU is a 400 naming the item (`items.2.sku`)."""
    if not lines:
        return PricedItems((), {})
    found = {
        p.sku: p for p in await Product.filter(merchant_id=merchant_id, sku__in={line.sku for line in lines})
    }
    items: list[Item] = []
    for index, line in enumerate(lines):
        product = found.get(line.sku)
        where = f"{field}.{index}.sku"
        if product is None:
            raise ValidationError(f"{where}：商品 {line.sku} 不在商品目录中", field=where)
        if not product.active:
            raise ValidationError(f"{where}：商品 {line.sku}（{product.name}）已停售", field=where)
        price = product.price_fen if line.unit_price_fen is None else line.unit_price_fen
        items.append(Item(sku=product.sku, category=product.category, qty=line.qty, unit_price_fen=price))
    return PricedItems(tuple(items), {sku: p.cost_fen for sku, p in found.items()})
