"""Admin JSON API of the points mall: items, their stock, orders and shipping.

Creating and replacing items needs an admin; reading, restocking and shipping a manager. An item's
stock changes only through `POST /api/admin/mall/items/{item_id}/stock` (a stock movement, once per
idempotency key, never below zero) — and through redemptions, cancellations and expiry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt

from handlers.mall import catalogue
from handlers.rules import mall as rules
from models.mall import ItemKind, MallItem, MallOrder, OrderStatus
from webhooks.api import BigId, Call, In, IntId, Line, Multiline, Out, Routes
from webhooks.auth import ADMIN, MANAGER

routes = Routes("admin_mall")
Limit = Annotated[StrictInt, Field(ge=1, le=rules.MAX_LIMIT)] | None


class ItemPath(In):
    item_id: IntId


class OrderPath(In):
    order_id: BigId


class ItemFieldsIn(In):
    name: Annotated[Line, Field(min_length=1, max_length=64)]
    description: Annotated[Multiline, Field(max_length=2000)] = ""
    image_url: Annotated[Line, Field(max_length=512, description="https:// only")] = ""
    category: Annotated[Line, Field(max_length=32)] = ""
    price_points: Annotated[StrictInt, Field(ge=1, le=rules.MAX_PRICE_POINTS)]
    cash_fen: Annotated[StrictInt, Field(ge=0, le=rules.MAX_CASH_FEN, description="pickup items only")] = 0
    limit_per_member: Limit = Field(default=None, description="lifetime units per member; null: no limit")
    limit_per_day: Limit = Field(default=None, description="units per member per merchant-local day")
    min_tier_rank: Annotated[StrictInt, Field(ge=0, le=1000, description="0: every tier")] = 0
    sale_starts_at: AwareDatetime | None = None
    sale_ends_at: AwareDatetime | None = None
    coupon_template_id: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = Field(
        default=None, description="required for coupon items, refused otherwise"
    )
    stored_value_fen: Annotated[
        StrictInt,
        Field(ge=0, le=rules.MAX_STORED_VALUE_FEN, description="> 0 for stored_value items, else 0"),
    ] = 0
    pickup_days: Annotated[StrictInt, Field(ge=1, le=rules.MAX_PICKUP_DAYS)] = 14
    active: StrictBool = True
    sort: Annotated[StrictInt, Field(ge=-1_000_000, le=1_000_000)] = 0

    def to_input(self) -> catalogue.ItemInput:
        return catalogue.ItemInput(**self.model_dump())


class ItemCreateIn(ItemFieldsIn):
    kind: ItemKind
    stock: Annotated[StrictInt, Field(ge=0, le=rules.MAX_STOCK, description="initial stock")] = 0

    def to_input(self) -> catalogue.ItemInput:
        return catalogue.ItemInput(**self.model_dump(exclude={"kind", "stock"}))


class ItemOut(Out):
    id: int
    kind: ItemKind
    name: str
    description: str
    image_url: str
    category: str
    price_points: int
    cash_fen: int
    stock: int
    limit_per_member: int | None
    limit_per_day: int | None
    min_tier_rank: int
    sale_starts_at: datetime | None
    sale_ends_at: datetime | None
    coupon_template_id: int | None
    stored_value_fen: int
    pickup_days: int
    active: bool
    sort: int
    low_stock_threshold: int | None = Field(
        description="库存预警: flagged at or below this stock; null: never"
    )
    created_at: datetime
    updated_at: datetime


class ItemsOut(Out):
    items: list[ItemOut]


class StockIn(In):
    delta: Annotated[
        StrictInt,
        Field(
            ge=-rules.MAX_STOCK,
            le=rules.MAX_STOCK,
            description="units to add (> 0) or remove (< 0, adjust only)",
        ),
    ]
    reason: Literal["restock", "adjust"]
    idempotency_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]


class StockOut(Out):
    item_id: int
    movement_id: int
    delta: int
    stock_after: int
    reason: str
    replayed: bool = Field(description="true when the key was used before: nothing new happened")


class OrderOut(Out):
    id: int
    member_id: int
    item_id: int
    item_name: str
    qty: int
    points: int
    cash_fen: int
    status: OrderStatus
    pickup_deadline: datetime | None
    address: dict[str, Any] | None
    flash_sale_id: int | None
    group_id: int | None
    verified_at: datetime | None
    verified_by_id: int | None
    created_at: datetime
    closed_at: datetime | None


class OrdersOut(Out):
    items: list[OrderOut]
    next_cursor: int | None = Field(description="pass as ?cursor= for older orders; null at the end")


class OrdersQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: OrderStatus | None = None
    cursor: Annotated[int, Field(ge=1, le=2**62)] | None = None
    limit: Annotated[int, Field(ge=1, le=catalogue.MAX_PAGE)] = 50


class ShipIn(In):
    carrier: Annotated[Line, Field(min_length=1, max_length=32, examples=["顺丰"])]
    tracking_no: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{4,40}$")]


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


def item_out(item: MallItem) -> ItemOut:
    return ItemOut(**{name: getattr(item, name) for name in ItemOut.model_fields})


def order_out(order: MallOrder) -> OrderOut:
    values = {name: getattr(order, name) for name in OrderOut.model_fields if name != "item_name"}
    return OrderOut(**values, item_name=order.item.name)


@routes.get("/api/admin/mall/items", response=ItemsOut, auth=MANAGER)
async def list_items(call: Call[None, None]) -> ItemsOut:
    """Every item of the merchant, active or not, by `sort`."""
    return ItemsOut(items=[item_out(item) for item in await catalogue.list_items(call.merchant.id)])


@routes.post("/api/admin/mall/items", body=ItemCreateIn, response=ItemOut, status=201, auth=ADMIN)
async def create_item(call: Call[ItemCreateIn, None]) -> ItemOut:
    """Create an item (its initial stock is a restock movement); audit-logged."""
    body = call.body
    item = await catalogue.create_item(
        call.merchant, body.kind, body.to_input(), stock=body.stock, actor=_actor(call)
    )
    return item_out(item)


@routes.get("/api/admin/mall/items/{item_id}", path_model=ItemPath, response=ItemOut, auth=MANAGER)
async def get_item(call: Call[None, ItemPath]) -> ItemOut:
    """One item."""
    return item_out(await catalogue.get_item(call.merchant.id, call.path.item_id))


@routes.put(
    "/api/admin/mall/items/{item_id}", path_model=ItemPath, body=ItemFieldsIn, response=ItemOut, auth=ADMIN
)
async def put_item(call: Call[ItemFieldsIn, ItemPath]) -> ItemOut:
    """Replace an item's fields (its kind and stock stay); audit-logged."""
    item = await catalogue.update_item(
        call.merchant, call.path.item_id, call.body.to_input(), actor=_actor(call)
    )
    return item_out(item)


@routes.post(
    "/api/admin/mall/items/{item_id}/stock",
    path_model=ItemPath,
    body=StockIn,
    response=StockOut,
    auth=MANAGER,
    errors=(409,),
)
async def adjust_stock(call: Call[StockIn, ItemPath]) -> StockOut:
    """Restock or adjust once per key; 409 if the stock would go below zero."""
    body = call.body
    movement, replayed = await catalogue.adjust_stock(
        call.merchant,
        call.path.item_id,
        delta=body.delta,
        reason=body.reason,
        key=body.idempotency_key,
        actor=_actor(call),
    )
    return StockOut(
        item_id=movement.item_id,
        movement_id=movement.id,
        delta=movement.delta,
        stock_after=movement.stock_after,
        reason=movement.reason,
        replayed=replayed,
    )


@routes.get("/api/admin/mall/orders", response=OrdersOut, auth=MANAGER, errors=(400,))
async def list_orders(call: Call[None, None]) -> OrdersOut:
    """Orders newest first (?status=to_ship&cursor=<next_cursor>&limit=1..100)."""
    query = OrdersQuery.model_validate({key: call.request.query.get(key) for key in call.request.query})
    page, cursor = await catalogue.orders_page(
        call.merchant.id, status=query.status, cursor=query.cursor, limit=query.limit
    )
    return OrdersOut(items=[order_out(order) for order in page], next_cursor=cursor)


@routes.post(
    "/api/admin/mall/orders/{order_id}/ship",
    path_model=OrderPath,
    body=ShipIn,
    response=OrderOut,
    auth=MANAGER,
    errors=(409,),
)
async def ship(call: Call[ShipIn, OrderPath]) -> OrderOut:
    """Mark an order to ship as shipped, with carrier and tracking number (409 unless it is to ship)."""
    order = await catalogue.ship(
        call.merchant,
        call.staff,
        call.path.order_id,
        carrier=call.body.carrier,
        tracking_no=call.body.tracking_no,
        now=datetime.now(UTC),
        effects=call.effects,
    )
    await order.fetch_related("item")
    return order_out(order)
