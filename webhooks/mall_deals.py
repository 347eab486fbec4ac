"""Flash sales (秒杀) and group deals (拼团): the admin endpoints (manager+ to create and list, admin
to edit or end one early) and the member endpoints.

A flash-sale purchase answers 409 with the reason (`已抢光`, `每人限购 N 件`, not started, ended,
not enough points); a retried `idempotency_key` answers the first order with `replayed: true`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, StrictInt

from handlers.core.errors import NotFound
from handlers.mall import flash, groups
from handlers.mall.orders import STATUS_LABELS
from handlers.staff import sessions
from models.mall import DealGroup, FlashSale, GroupDeal, GroupStatus, MallOrder, OrderStatus
from webhooks.api import ApiError, Call, In, IntId, Out, Routes
from webhooks.appkeys import REDIS
from webhooks.auth import ADMIN, MANAGER, MEMBER, MEMBER_SESSION_DEFERRED, bearer_token
from webhooks.mp import MerchantPath

routes = Routes("mall_deals")

Key = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="client-chosen idempotency key; a retry with the same key is safe",
    ),
]
Points = Annotated[StrictInt, Field(ge=1, le=flash.MAX_POINTS)]


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


def _now() -> datetime:
    return datetime.now(UTC)


# Flash sales ---------------------------------------------------------------------------------------


class FlashSaleIn(In):
    item_id: IntId
    price_points: Points
    stock: Annotated[StrictInt, Field(ge=1, le=flash.MAX_UNITS, description="units moved from the item")]
    limit_per_member: Annotated[StrictInt, Field(ge=1, le=flash.MAX_UNITS)] = 1
    starts_at: AwareDatetime
    ends_at: AwareDatetime


class FlashSaleOut(Out):
    id: int
    item_id: int
    item_name: str
    price_points: int
    stock: int
    sold: int
    limit_per_member: int
    starts_at: datetime
    ends_at: datetime
    state: str = Field(description="upcoming, live or ended", examples=["live"])


class FlashSalesOut(Out):
    items: list[FlashSaleOut]


def _state(starts_at: datetime, ends_at: datetime, now: datetime) -> str:
    return "upcoming" if now < starts_at else "live" if now < ends_at else "ended"


def _sale_out(sale: FlashSale, now: datetime) -> FlashSaleOut:
    return FlashSaleOut(
        id=sale.id,
        item_id=sale.item_id,
        item_name=sale.item.name,
        price_points=sale.price_points,
        stock=sale.stock,
        sold=sale.sold,
        limit_per_member=sale.limit_per_member,
        starts_at=sale.starts_at,
        ends_at=sale.ends_at,
        state=_state(sale.starts_at, sale.ends_at, now),
    )


@routes.post(
    "/api/admin/mall/flash-sales",
    body=FlashSaleIn,
    response=FlashSaleOut,
    status=201,
    auth=MANAGER,
    errors=(404, 409),
)
async def create_flash_sale(call: Call[FlashSaleIn, None]) -> FlashSaleOut:
    """Create a flash sale: `stock` units move from the item to the sale (refused if the item lacks them)."""
    body, now = call.body, _now()
    spec = flash.SaleSpec(
        item_id=body.item_id,
        price_points=body.price_points,
        stock=body.stock,
        limit_per_member=body.limit_per_member,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
    )
    sale = await flash.create_sale(call.merchant.id, spec, now=now, actor=_actor(call))
    await sale.fetch_related("item")
    return _sale_out(sale, now)


@routes.get("/api/admin/mall/flash-sales", response=FlashSalesOut, auth=MANAGER)
async def list_flash_sales(call: Call[None, None]) -> FlashSalesOut:
    """Every flash sale of the merchant, with units sold."""
    now = _now()
    return FlashSalesOut(items=[_sale_out(s, now) for s in await flash.list_sales(call.merchant.id)])


class SaleIdPath(In):
    sale_id: IntId


class FlashSaleEditIn(In):
    """The fields to change (absent: unchanged). Before the start any; once started only `ends_at`
    (still in the future) and `stock` (upwards); an ended sale none (409)."""

    price_points: Points | None = None
    stock: Annotated[StrictInt, Field(ge=1, le=flash.MAX_UNITS)] | None = None
    limit_per_member: Annotated[StrictInt, Field(ge=1, le=flash.MAX_UNITS)] | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None


async def _sale_of(call: Call[Any, SaleIdPath], now: datetime) -> FlashSaleOut:
    sale = await FlashSale.get_or_none(id=call.path.sale_id, merchant_id=call.merchant.id)
    if sale is None:
        raise NotFound("秒杀活动不存在", field="flash_sale")
    await sale.fetch_related("item")
    return _sale_out(sale, now)


@routes.get(
    "/api/admin/mall/flash-sales/{sale_id}", path_model=SaleIdPath, response=FlashSaleOut, auth=MANAGER
)
async def get_flash_sale(call: Call[None, SaleIdPath]) -> FlashSaleOut:
    """One flash sale, with units sold."""
    return await _sale_of(call, _now())


@routes.patch(
    "/api/admin/mall/flash-sales/{sale_id}",
    path_model=SaleIdPath,
    body=FlashSaleEditIn,
    response=FlashSaleOut,
    auth=ADMIN,
    errors=(404, 409),
)
async def edit_flash_sale(call: Call[FlashSaleEditIn, SaleIdPath]) -> FlashSaleOut:
    """Change a sale: every process's next attempt is decided on the new terms (a stock change moves
    units between the item and the sale; lowering it below the units sold is refused)."""
    body, now = call.body, _now()
    changes = flash.SaleChanges(**body.model_dump(exclude_unset=True))
    redis = call.request.app[REDIS]
    await flash.update_sale(redis, call.merchant.id, call.path.sale_id, changes, now=now, actor=_actor(call))
    return await _sale_of(call, now)


@routes.post(
    "/api/admin/mall/flash-sales/{sale_id}/end",
    path_model=SaleIdPath,
    response=FlashSaleOut,
    auth=ADMIN,
    errors=(404, 409),
)
async def end_flash_sale(call: Call[None, SaleIdPath]) -> FlashSaleOut:
    """End a sale now (one not started never opens): once this answers, no attempt in any process
    succeeds. Units not sold stay allotted to the sale, as when a sale runs to its end."""
    now = _now()
    await flash.end_sale(
        call.request.app[REDIS], call.merchant.id, call.path.sale_id, now=now, actor=_actor(call)
    )
    return await _sale_of(call, now)


@routes.get(
    "/api/mp/{merchant_slug}/mall/flash-sales", path_model=MerchantPath, response=FlashSalesOut, auth=MEMBER
)
async def member_flash_sales(call: Call[None, MerchantPath]) -> FlashSalesOut:
    """Flash sales that are live or upcoming."""
    now = _now()
    sales = await flash.list_sales(call.merchant.id, since=now)
    return FlashSalesOut(items=[_sale_out(s, now) for s in sales])


class SalePath(MerchantPath):
    sale_id: IntId


class KeyIn(In):
    idempotency_key: Key


class OrderOut(Out):
    order_id: int
    status: OrderStatus
    status_label: str
    points: int
    pickup_code: str | None = Field(description="shown at the till; null until the order can be picked up")
    pickup_deadline: datetime | None


class FlashBuyOut(OrderOut):
    flash_sale_id: int
    replayed: bool = Field(description="true when the key was used before: this is the first order")


def _order_fields(order: MallOrder) -> dict[str, object]:
    return {
        "order_id": order.id,
        "status": order.status,
        "status_label": STATUS_LABELS[order.status],
        "points": order.points,
        "pickup_code": order.pickup_code,
        "pickup_deadline": order.pickup_deadline,
    }


@routes.post(
    "/api/mp/{merchant_slug}/mall/flash-sales/{sale_id}/buy",
    path_model=SalePath,
    body=KeyIn,
    response=FlashBuyOut,
    auth=MEMBER_SESSION_DEFERRED,
    errors=(409, 503),
)
async def buy_flash(call: Call[KeyIn, SalePath]) -> FlashBuyOut:
    """Grab one unit of a live flash sale (409: sold out, limit reached, not open, not enough points)."""
    redis, now = call.request.app[REDIS], _now()
    gated = await _gate(call, now)
    principal = await call.authenticate()
    bought = await flash.buy(
        redis,
        principal.merchant,
        principal.session.subject_id,
        call.path.sale_id,
        key=call.body.idempotency_key,
        now=now,
        effects=call.effects,
        gated=gated,
    )
    return FlashBuyOut.model_validate(
        {**_order_fields(bought.order), "flash_sale_id": bought.sale.id, "replayed": bought.replayed}
    )


async def _gate(call: Call[KeyIn, SalePath], now: datetime) -> tuple[FlashSale, flash.Verdict] | None:
    """An attempt at an open sale this process has read: the session and the gate in one round trip
    (`flash.take_as_member`), which authenticates the caller; None leaves both to the ordinary path."""
    sale = flash.open_sale(call.path.sale_id, now)
    token = bearer_token(call.request)
    session_key = sessions.record_key(token) if token is not None else None
    if sale is None or session_key is None:
        return None
    redis = call.request.app[REDIS]
    answer = await flash.take_as_member(redis, sale, session_key, call.body.idempotency_key, now)
    if answer.verdict is None and answer.record is not None:  # another merchant's session, or no gate yet
        return None
    try:
        call.authenticated(await MEMBER_SESSION_DEFERRED.principal(sessions.decode(answer.record), call.path))
    except ApiError:
        if answer.verdict is flash.Verdict.TAKEN:
            await asyncio.shield(flash.undo_take(redis, sale.id, answer.member_id, call.body.idempotency_key))
        raise
    if answer.verdict is None or answer.sale is None:
        return None
    return answer.sale, answer.verdict


# Group deals ---------------------------------------------------------------------------------------


class GroupDealIn(In):
    item_id: IntId
    price_points: Points
    group_size: Annotated[StrictInt, Field(ge=2, le=groups.MAX_GROUP_SIZE)]
    hours: Annotated[StrictInt, Field(ge=1, le=groups.MAX_HOURS, description="time for a group to fill")]
    starts_at: AwareDatetime
    ends_at: AwareDatetime


class GroupDealOut(Out):
    id: int
    item_id: int
    item_name: str
    price_points: int
    group_size: int
    hours: int
    starts_at: datetime
    ends_at: datetime
    active: bool
    state: str = Field(description="upcoming, live or ended", examples=["live"])


class GroupDealsOut(Out):
    items: list[GroupDealOut]


def _deal_out(deal: GroupDeal, now: datetime) -> GroupDealOut:
    return GroupDealOut(
        id=deal.id,
        item_id=deal.item_id,
        item_name=deal.item.name,
        price_points=deal.price_points,
        group_size=deal.group_size,
        hours=deal.hours,
        starts_at=deal.starts_at,
        ends_at=deal.ends_at,
        active=deal.active,
        state=_state(deal.starts_at, deal.ends_at, now),
    )


@routes.post(
    "/api/admin/mall/group-deals",
    body=GroupDealIn,
    response=GroupDealOut,
    status=201,
    auth=MANAGER,
    errors=(404, 409),
)
async def create_group_deal(call: Call[GroupDealIn, None]) -> GroupDealOut:
    """Create a group deal: the item at `price_points` when `group_size` members join within `hours`."""
    body, now = call.body, _now()
    spec = groups.DealSpec(
        item_id=body.item_id,
        price_points=body.price_points,
        group_size=body.group_size,
        hours=body.hours,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
    )
    deal = await groups.create_deal(call.merchant.id, spec, now=now, actor=_actor(call))
    await deal.fetch_related("item")
    return _deal_out(deal, now)


@routes.get("/api/admin/mall/group-deals", response=GroupDealsOut, auth=MANAGER)
async def list_group_deals(call: Call[None, None]) -> GroupDealsOut:
    """Every group deal of the merchant."""
    now = _now()
    return GroupDealsOut(items=[_deal_out(d, now) for d in await groups.list_deals(call.merchant.id)])


class DealIdPath(In):
    deal_id: IntId


class GroupDealEditIn(In):
    """The fields to change (absent: unchanged). Before the start any; once started only `ends_at`
    (still in the future); an ended deal none (409)."""

    price_points: Points | None = None
    group_size: Annotated[StrictInt, Field(ge=2, le=groups.MAX_GROUP_SIZE)] | None = None
    hours: Annotated[StrictInt, Field(ge=1, le=groups.MAX_HOURS)] | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None


class GroupDealEndOut(GroupDealOut):
    failed_groups: int = Field(description="open groups that failed now, their members refunded")
    refunded_orders: int


async def _deal_of(call: Call[Any, DealIdPath], now: datetime) -> GroupDealOut:
    deal = await GroupDeal.get_or_none(id=call.path.deal_id, merchant_id=call.merchant.id)
    if deal is None:
        raise NotFound("拼团活动不存在", field="group_deal")
    await deal.fetch_related("item")
    return _deal_out(deal, now)


@routes.get(
    "/api/admin/mall/group-deals/{deal_id}", path_model=DealIdPath, response=GroupDealOut, auth=MANAGER
)
async def get_group_deal(call: Call[None, DealIdPath]) -> GroupDealOut:
    """One group deal."""
    return await _deal_of(call, _now())


@routes.patch(
    "/api/admin/mall/group-deals/{deal_id}",
    path_model=DealIdPath,
    body=GroupDealEditIn,
    response=GroupDealOut,
    auth=ADMIN,
    errors=(404, 409),
)
async def edit_group_deal(call: Call[GroupDealEditIn, DealIdPath]) -> GroupDealOut:
    """Change a deal; groups already started keep the terms they started under."""
    now = _now()
    changes = groups.DealChanges(**call.body.model_dump(exclude_unset=True))
    await groups.update_deal(call.merchant.id, call.path.deal_id, changes, now=now, actor=_actor(call))
    return await _deal_of(call, now)


@routes.post(
    "/api/admin/mall/group-deals/{deal_id}/end",
    path_model=DealIdPath,
    response=GroupDealEndOut,
    auth=ADMIN,
    errors=(404, 409),
)
async def end_group_deal(call: Call[None, DealIdPath]) -> GroupDealEndOut:
    """End a deal now: no group starts or joins from here on; open groups fail and every member's
    points come back once (as when a group expires). Groups already filled keep their orders."""
    now = _now()
    ended = await groups.end_deal(
        call.merchant.id, call.path.deal_id, now=now, actor=_actor(call), effects=call.effects
    )
    out = await _deal_of(call, now)
    return GroupDealEndOut(
        **out.model_dump(), failed_groups=ended.failed_groups, refunded_orders=ended.refunded_orders
    )


@routes.get(
    "/api/mp/{merchant_slug}/mall/group-deals", path_model=MerchantPath, response=GroupDealsOut, auth=MEMBER
)
async def member_group_deals(call: Call[None, MerchantPath]) -> GroupDealsOut:
    """Group deals open now."""
    now = _now()
    deals = await groups.list_deals(call.merchant.id, live_at=now)
    return GroupDealsOut(items=[_deal_out(d, now) for d in deals])


class DealPath(MerchantPath):
    deal_id: IntId


class GroupPath(MerchantPath):
    group_id: IntId


class GroupMemberOut(Out):
    name: str = Field(description="masked, e.g. 王*")
    leader: bool
    joined_at: datetime


class GroupOut(Out):
    id: int
    deal_id: int
    item_name: str
    price_points: int
    status: GroupStatus
    group_size: int
    joined: int
    members: list[GroupMemberOut]
    expires_at: datetime
    seconds_left: int = Field(description="time left to fill; 0 once filled, failed or expired")


class JoinOut(OrderOut):
    group: GroupOut
    replayed: bool = Field(description="true when the key was used before: this is the first order")


def _group_out(view: groups.GroupView) -> GroupOut:
    group, deal = view.group, view.deal
    return GroupOut(
        id=group.id,
        deal_id=deal.id,
        item_name=deal.item.name,
        price_points=deal.price_points,
        status=group.status,
        group_size=deal.group_size,
        joined=group.joined,
        members=[GroupMemberOut(name=m.name, leader=m.leader, joined_at=m.joined_at) for m in view.members],
        expires_at=group.expires_at,
        seconds_left=view.seconds_left,
    )


async def _joined_out(call: Call[KeyIn, Any], joined: groups.Joined, now: datetime) -> JoinOut:
    group: DealGroup = joined.group
    view = await groups.view_group(call.merchant.id, group.id, now=now)
    return JoinOut.model_validate(
        {**_order_fields(joined.order), "group": _group_out(view), "replayed": joined.replayed}
    )


@routes.post(
    "/api/mp/{merchant_slug}/mall/group-deals/{deal_id}/groups",
    path_model=DealPath,
    body=KeyIn,
    response=JoinOut,
    auth=MEMBER,
    errors=(409,),
)
async def start_group(call: Call[KeyIn, DealPath]) -> JoinOut:
    """Start a group as its leader; the points are taken now and returned if the group does not fill."""
    now = _now()
    joined = await groups.start_group(
        call.merchant, call.member, call.path.deal_id, key=call.body.idempotency_key, now=now
    )
    return await _joined_out(call, joined, now)


@routes.post(
    "/api/mp/{merchant_slug}/mall/groups/{group_id}/join",
    path_model=GroupPath,
    body=KeyIn,
    response=JoinOut,
    auth=MEMBER,
    errors=(409,),
)
async def join_group(call: Call[KeyIn, GroupPath]) -> JoinOut:
    """Join an open group; the member who fills it gives everyone their pick-up code."""
    now = _now()
    joined = await groups.join_group(
        call.merchant,
        call.member,
        call.path.group_id,
        key=call.body.idempotency_key,
        now=now,
        effects=call.effects,
    )
    return await _joined_out(call, joined, now)


@routes.get(
    "/api/mp/{merchant_slug}/mall/groups/{group_id}", path_model=GroupPath, response=GroupOut, auth=MEMBER
)
async def get_group(call: Call[None, GroupPath]) -> GroupOut:
    """A group's status, who joined (names masked) and the time left to fill."""
    return _group_out(await groups.view_group(call.merchant.id, call.path.group_id, now=_now()))
