"""Points mall for the logged-in member (catalogue, redeem, orders, cancel) and the staff pick-up desk.

Refusals are 409s whose message names the reason (库存不足, 超过每人限兑数量, 今日已达上限, 等级不足,
不在兑换时间内, 积分不足) and whose `field` says which rule (`stock`, `limit_per_member`,
`limit_per_day`, `tier`, `sale_window`, `points`); nothing changes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from handlers.mall import catalogue, flash
from handlers.mall.orders import STATUS_LABELS
from handlers.rules.mall import MAX_QTY
from handlers.staff.scope import activity_store_id
from models.mall import ItemKind, MallItem, MallOrder, OrderStatus
from webhooks.api import BigId, Call, In, IntId, Line, Out, Routes
from webhooks.appkeys import REDIS
from webhooks.auth import CASHIER, MEMBER
from webhooks.mp import MerchantPath

routes = Routes("mall")
Key = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="client-chosen idempotency key; a retry with the same key is safe",
    ),
]


class ItemPath(MerchantPath):
    item_id: IntId


class OrderPath(MerchantPath):
    order_id: BigId


class OfferOut(Out):
    id: int
    kind: ItemKind
    name: str
    description: str
    image_url: str
    category: str
    price_points: int
    cash_fen: int = Field(description="paid at the till at pick-up, in fen")
    stored_value_fen: int
    stock: int
    pickup_days: int
    sale_starts_at: datetime | None
    sale_ends_at: datetime | None
    min_tier_rank: int
    on_sale: bool = Field(description="active and within the sale window now")
    eligible: bool = Field(description="the member's tier may redeem it")
    remaining_limit: int | None = Field(description="units the member may still redeem; null: no limit")


class OffersOut(Out):
    items: list[OfferOut]


class OrderOut(Out):
    id: int
    item_id: int
    item_name: str
    kind: ItemKind
    qty: int
    points: int
    cash_fen: int
    status: OrderStatus
    status_label: str = Field(examples=["待提货"])
    pickup_code: str | None = Field(description="show at the till; only while the order awaits pick-up")
    pickup_deadline: datetime | None
    address: dict[str, Any] | None = Field(description="shipping address; `shipment` once shipped")
    can_cancel: bool
    created_at: datetime
    verified_at: datetime | None
    closed_at: datetime | None


class RedeemOut(OrderOut):
    replayed: bool = Field(description="true when the key was used before: nothing new happened")


class OrdersOut(Out):
    items: list[OrderOut]
    next_cursor: int | None = Field(description="pass as ?cursor= for older orders; null at the end")


class AddressIn(In):
    name: Annotated[Line, Field(min_length=1, max_length=32)]
    phone: Annotated[Line, Field(min_length=1, max_length=20, examples=["13800138000"])]
    region: Annotated[Line, Field(min_length=1, max_length=64, examples=["上海市 徐汇区"])]
    detail: Annotated[Line, Field(min_length=1, max_length=128)]


class RedeemIn(In):
    item_id: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
    qty: Annotated[StrictInt, Field(ge=1, le=MAX_QTY)] = 1
    idempotency_key: Key
    address: AddressIn | None = Field(
        default=None, description="required for shipped items, refused otherwise"
    )


class OrdersQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    cursor: Annotated[int, Field(ge=1, le=2**62)] | None = None
    limit: Annotated[int, Field(ge=1, le=catalogue.MAX_PAGE)] = 20


class VerifyIn(In):
    code: Annotated[Line, Field(min_length=1, max_length=16, description="the member's pick-up code")]


class VerifiedOut(Out):
    order_id: int
    item_name: str
    qty: int
    cash_fen: int = Field(description="collect this at the till, in fen (0: nothing to collect)")
    member_code: str
    member_name: str | None
    verified_at: datetime
    message: str


def offer_out(offer: catalogue.Offer) -> OfferOut:
    item = offer.item
    return OfferOut(
        id=item.id,
        kind=ItemKind(item.kind),
        name=item.name,
        description=item.description,
        image_url=item.image_url,
        category=item.category,
        price_points=item.price_points,
        cash_fen=item.cash_fen,
        stored_value_fen=item.stored_value_fen,
        stock=item.stock,
        pickup_days=item.pickup_days,
        sale_starts_at=item.sale_starts_at,
        sale_ends_at=item.sale_ends_at,
        min_tier_rank=item.min_tier_rank,
        on_sale=offer.on_sale,
        eligible=offer.eligible,
        remaining_limit=offer.remaining,
    )


def order_fields(order: MallOrder) -> dict[str, Any]:
    item: MallItem = order.item
    status = OrderStatus(order.status)
    return {
        "id": order.id,
        "item_id": order.item_id,
        "item_name": item.name,
        "kind": ItemKind(item.kind),
        "qty": order.qty,
        "points": order.points,
        "cash_fen": order.cash_fen,
        "status": status,
        "status_label": STATUS_LABELS[status],
        "pickup_code": order.open_pickup_code if status is OrderStatus.AWAITING_PICKUP else None,
        "pickup_deadline": order.pickup_deadline,
        "address": order.address,
        "can_cancel": status in (OrderStatus.AWAITING_PICKUP, OrderStatus.TO_SHIP),
        "created_at": order.created_at,
        "verified_at": order.verified_at,
        "closed_at": order.closed_at,
    }


def _query(request: web.Request) -> OrdersQuery:
    return OrdersQuery.model_validate({key: request.query.get(key) for key in request.query})


@routes.get("/api/mp/{merchant_slug}/mall/items", path_model=MerchantPath, response=OffersOut, auth=MEMBER)
async def items(call: Call[None, MerchantPath]) -> OffersOut:
    """Items on sale now, with stock, whether the member's tier may redeem them and their limit left."""
    offers = await catalogue.catalogue(call.merchant, call.member.id, now=datetime.now(UTC))
    return OffersOut(items=[offer_out(offer) for offer in offers])


@routes.get(
    "/api/mp/{merchant_slug}/mall/items/{item_id}", path_model=ItemPath, response=OfferOut, auth=MEMBER
)
async def item(call: Call[None, ItemPath]) -> OfferOut:
    """One active item as the member sees it."""
    found = await catalogue.offer(call.merchant, call.member.id, call.path.item_id, now=datetime.now(UTC))
    return offer_out(found)


@routes.post(
    "/api/mp/{merchant_slug}/mall/redeem",
    path_model=MerchantPath,
    body=RedeemIn,
    response=RedeemOut,
    auth=MEMBER,
    errors=(400, 404, 409),
)
async def redeem(call: Call[RedeemIn, MerchantPath]) -> RedeemOut:
    """Redeem an item with points; refused (409, nothing changes) with the reason in `message`."""
    body = call.body
    order, replayed = await catalogue.redeem(
        call.merchant,
        call.member,
        body.item_id,
        qty=body.qty,
        client_key=body.idempotency_key,
        now=datetime.now(UTC),
        address=body.address.model_dump() if body.address else None,
        effects=call.effects,
    )
    order = await catalogue.member_order(call.merchant.id, call.member.id, order.id)
    return RedeemOut(**order_fields(order), replayed=replayed)


@routes.get(
    "/api/mp/{merchant_slug}/mall/orders",
    path_model=MerchantPath,
    response=OrdersOut,
    auth=MEMBER,
    errors=(400,),
)
async def orders(call: Call[None, MerchantPath]) -> OrdersOut:
    """The member's orders, newest first (?cursor=<next_cursor>&limit=1..100)."""
    query = _query(call.request)
    page, cursor = await catalogue.orders_page(
        call.merchant.id, member_id=call.member.id, cursor=query.cursor, limit=query.limit
    )
    return OrdersOut(items=[OrderOut(**order_fields(order)) for order in page], next_cursor=cursor)


@routes.get(
    "/api/mp/{merchant_slug}/mall/orders/{order_id}", path_model=OrderPath, response=OrderOut, auth=MEMBER
)
async def order(call: Call[None, OrderPath]) -> OrderOut:
    """One of the member's orders (its pick-up code while it awaits pick-up)."""
    return OrderOut(
        **order_fields(await catalogue.member_order(call.merchant.id, call.member.id, call.path.order_id))
    )


@routes.post(
    "/api/mp/{merchant_slug}/mall/orders/{order_id}/cancel",
    path_model=OrderPath,
    response=OrderOut,
    auth=MEMBER,
    errors=(409,),
)
async def cancel(call: Call[None, OrderPath]) -> OrderOut:
    """Cancel before pick-up or shipping: points and stock come back once (409 if no longer possible)."""
    order = await catalogue.cancel(call.merchant, call.member, call.path.order_id, now=datetime.now(UTC))
    await flash.forget_returned(call.request.app[REDIS], order)
    return OrderOut(
        **order_fields(await catalogue.member_order(call.merchant.id, call.member.id, call.path.order_id))
    )


@routes.post(
    "/api/staff/pickups/verify", body=VerifyIn, response=VerifiedOut, auth=CASHIER, errors=(404, 409)
)
async def verify_pickup(call: Call[VerifyIn, None]) -> VerifiedOut:
    """Hand over a pick-up order once; 409 names who verified it and when, or why it cannot be."""
    store_id = await activity_store_id(call.staff, call.merchant.id)
    done = await catalogue.verify_pickup(
        call.merchant, call.staff, call.body.code, now=datetime.now(UTC), store_id=store_id
    )
    order = done.order
    cash = f"，请收取现金 {order.cash_fen / 100:.2f} 元" if order.cash_fen else ""
    return VerifiedOut(
        order_id=order.id,
        item_name=done.item_name,
        qty=order.qty,
        cash_fen=order.cash_fen,
        member_code=done.member_code,
        member_name=done.member_name,
        verified_at=order.verified_at or datetime.now(UTC),
        message=f"核销成功：{done.item_name}×{order.qty}{cash}",
    )
