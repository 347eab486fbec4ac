"""The points mall for admins and members: items (create, replace, stock adjustments), the catalogue,
redemption, cancellation and order lists.

The transactional order core lives in `handlers.mall.orders` and is re-exported here for the
features built on it (flash sales, group deals): `place_order`, `open_pickup`, `return_order`,
`OrderClosed`, `move_stock`. An item's stock changes only through `move_stock` (a StockMovement row).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import DomainError, IdempotencyMismatch, NotFound, ValidationError
from handlers.core.tasks import Effects
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import tiers
from handlers.mall.orders import (
    OPEN,
    RETURNED,
    STATUS_LABELS,
    OrderClosed,
    local_time,
    move_stock,
    open_pickup,
    place_order,
    place_order_once,
    return_order,
    terms,
    validate_address,
)
from handlers.members import blocking
from handlers.members.lookup import CODE_ALPHABET
from handlers.notices.delivery import tell
from handlers.rules.calendar import local_day
from handlers.rules.errors import RuleError
from handlers.rules.mall import (
    MAX_STOCK,
    ItemSpec,
    MemberStanding,
    in_window,
    is_pickup_code,
    normalise_pickup_code,
    remaining_limit,
    validate_item,
)
from models.coupon import CouponTemplate
from models.mall import ItemKind, MallItem, MallOrder, OrderStatus, StockMovement
from models.member import Member
from models.merchant import Merchant
from models.staff import Staff

__all__ = [
    "ItemInput",
    "Offer",
    "OrderClosed",
    "adjust_stock",
    "cancel",
    "catalogue",
    "create_item",
    "get_item",
    "list_items",
    "member_order",
    "move_stock",
    "offer",
    "open_pickup",
    "orders_page",
    "place_order",
    "redeem",
    "return_order",
    "ship",
    "update_item",
    "verify_pickup",
]
STOCK_REASONS = ("restock", "adjust")
MAX_PAGE = 100


def check_campaign_window(starts_at: datetime, ends_at: datetime, now: datetime) -> None:
    """A flash sale's or group deal's window: aware times, ending after it starts, not yet over."""
    if starts_at.utcoffset() is None or ends_at.utcoffset() is None:
        raise ValidationError("时间须带时区", field="starts_at")
    if ends_at <= starts_at:
        raise ValidationError("结束时间须晚于开始时间", field="ends_at")
    if ends_at <= now:
        raise ValidationError("结束时间已过", field="ends_at")


# Items (admin) ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemInput:
    """The editable fields of an item (everything but its kind and stock)."""

    name: str
    price_points: int
    description: str = ""
    image_url: str = ""
    category: str = ""
    cash_fen: int = 0
    limit_per_member: int | None = None
    limit_per_day: int | None = None
    min_tier_rank: int = 0
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    coupon_template_id: int | None = None
    stored_value_fen: int = 0
    pickup_days: int = 14
    active: bool = True
    sort: int = 0

    def columns(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


async def _validate(merchant: Merchant, kind: ItemKind, data: ItemInput) -> None:
    _, ladder = await loyalty_config.current_tiers(merchant.id)
    spec = ItemSpec(
        kind=kind.value,
        price_points=data.price_points,
        cash_fen=data.cash_fen,
        stored_value_fen=data.stored_value_fen,
        has_coupon_template=data.coupon_template_id is not None,
        limit_per_member=data.limit_per_member,
        limit_per_day=data.limit_per_day,
        min_tier_rank=data.min_tier_rank,
        sale_starts_at=data.sale_starts_at,
        sale_ends_at=data.sale_ends_at,
        image_url=data.image_url,
        pickup_days=data.pickup_days,
    )
    try:
        validate_item(spec, max_tier_rank=max(tier.rank for tier in ladder))
    except RuleError as exc:
        raise ValidationError(f"{exc.field}: {exc.message}", field=exc.field) from None
    if data.coupon_template_id is not None and not await CouponTemplate.exists(
        id=data.coupon_template_id, merchant_id=merchant.id
    ):
        raise ValidationError("coupon_template_id: 优惠券模板不存在", field="coupon_template_id")


async def create_item(
    merchant: Merchant, kind: ItemKind, data: ItemInput, *, stock: int, actor: str
) -> MallItem:
    """A new item; its initial stock arrives as a `restock` movement (key `item:<id>:initial`)."""
    await _validate(merchant, kind, data)
    if not 0 <= stock <= MAX_STOCK:
        raise ValidationError(f"stock: 库存须在 0–{MAX_STOCK} 之间", field="stock")
    async with in_transaction():
        item = await MallItem.create(merchant_id=merchant.id, kind=kind, stock=0, **data.columns())
        if stock:
            await move_stock(item, stock, "restock", key=f"item:{item.id}:initial", actor=actor)
        await audit_log.record(
            merchant.id, actor, "mall.item.create", str(item.id), kind=kind.value, name=item.name, stock=stock
        )
    return item


async def get_item(merchant_id: int, item_id: int) -> MallItem:
    item = await MallItem.get_or_none(id=item_id, merchant_id=merchant_id)
    if item is None:
        raise NotFound("商品不存在", field="item_id")
    return item


async def list_items(merchant_id: int) -> list[MallItem]:
    return await MallItem.filter(merchant_id=merchant_id).order_by("sort", "id")


async def update_item(merchant: Merchant, item_id: int, data: ItemInput, *, actor: str) -> MallItem:
    """Replace the editable fields (kind and stock stay; stock changes through `adjust_stock`)."""
    item = await get_item(merchant.id, item_id)
    await _validate(merchant, ItemKind(item.kind), data)
    async with in_transaction():
        locked = await MallItem.select_for_update().get(id=item.id)
        for name, value in data.columns().items():
            setattr(locked, name, value)
        await locked.save()
        await audit_log.record(
            merchant.id,
            actor,
            "mall.item.update",
            str(item.id),
            name=locked.name,
            price_points=locked.price_points,
            active=locked.active,
        )
    return locked


async def adjust_stock(
    merchant: Merchant, item_id: int, *, delta: int, reason: str, key: str, actor: str
) -> tuple[StockMovement, bool]:
    """Restock (delta > 0) or adjust (either sign) once per `key`; never below zero.

    Returns the movement and whether it is a replay of the key (same item, delta and reason).
    """
    if reason not in STOCK_REASONS:
        raise ValidationError("reason: 须为 restock 或 adjust", field="reason")
    if delta == 0 or abs(delta) > MAX_STOCK or (reason == "restock" and delta < 0):
        raise ValidationError("delta: 补货须为正数，调整不能为 0", field="delta")
    stored_key = f"admin:{key}"
    if (replayed := await _stock_replay(merchant.id, stored_key, item_id, delta, reason)) is not None:
        return replayed, True
    try:
        async with in_transaction():
            item = await MallItem.select_for_update().get_or_none(id=item_id, merchant_id=merchant.id)
            if item is None:
                raise NotFound("商品不存在", field="item_id")
            movement = await move_stock(item, delta, reason, key=stored_key, actor=actor)
            await audit_log.record(
                merchant.id,
                actor,
                f"mall.stock.{reason}",
                str(item.id),
                delta=delta,
                stock_after=movement.stock_after,
            )
    except IntegrityError:
        if (replayed := await _stock_replay(merchant.id, stored_key, item_id, delta, reason)) is not None:
            return replayed, True
        raise
    return movement, False


async def _stock_replay(
    merchant_id: int, key: str, item_id: int, delta: int, reason: str
) -> StockMovement | None:
    movement = await StockMovement.get_or_none(merchant_id=merchant_id, idempotency_key=key)
    if movement is None:
        return None
    if (movement.item_id, movement.delta, movement.reason) != (item_id, delta, reason):
        raise IdempotencyMismatch()
    return movement


# The catalogue (members) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offer:
    """An item as one member sees it: may their tier redeem it, how many more may they take."""

    item: MallItem
    on_sale: bool
    eligible: bool
    remaining: int | None  # under the personal limits; None: unlimited


async def _standings(merchant: Merchant, member_id: int, now: datetime) -> tuple[int, dict[int, list[int]]]:
    _, ladder = await loyalty_config.current_tiers(merchant.id)
    rank = loyalty_config.tier_by_code(ladder, await tiers.tier_code(merchant.id, member_id)).rank
    today = local_day(now, merchant.timezone)
    held: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    rows = (
        await MallOrder.filter(member_id=member_id)
        .exclude(status__in=RETURNED)
        .values_list("item_id", "qty", "local_day")
    )
    for item_id, qty, day in rows:
        held[item_id][0] += qty
        held[item_id][1] += qty if _as_date(day) == today else 0
    return rank, held


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _offer(item: MallItem, rank: int, held: dict[int, list[int]], now: datetime) -> Offer:
    total, today = held.get(item.id, [0, 0])
    standing = MemberStanding(tier_rank=rank, bought_total=total, bought_today=today)
    return Offer(
        item=item,
        on_sale=item.active and in_window(item.sale_starts_at, item.sale_ends_at, now),
        eligible=rank >= item.min_tier_rank,
        remaining=remaining_limit(terms(item), standing),
    )


async def catalogue(
    merchant: Merchant, member_id: int | None, *, now: datetime, limit: int = MAX_PAGE
) -> list[Offer]:
    """Active items on sale now, by `sort`; `member_id=None` shows them to nobody in particular."""
    items = (
        await MallItem.filter(
            Q(sale_starts_at__isnull=True) | Q(sale_starts_at__lte=now),
            Q(sale_ends_at__isnull=True) | Q(sale_ends_at__gt=now),
            merchant_id=merchant.id,
            active=True,
        )
        .order_by("sort", "id")
        .limit(limit)
    )
    rank, held = await _standings(merchant, member_id, now) if member_id is not None else (0, {})
    return [_offer(item, rank, held, now) for item in items]


async def offer(merchant: Merchant, member_id: int, item_id: int, *, now: datetime) -> Offer:
    """One active item as the member sees it (also before or after its sale window)."""
    item = await get_item(merchant.id, item_id)
    if not item.active:
        raise NotFound("商品不存在", field="item_id")
    rank, held = await _standings(merchant, member_id, now)
    return _offer(item, rank, held, now)


# Redeeming and cancelling (members) ---------------------------------------------------------------


async def redeem(
    merchant: Merchant,
    member: Member,
    item_id: int,
    *,
    qty: int,
    client_key: str,
    now: datetime,
    effects: Effects,
    address: dict[str, Any] | None = None,
) -> tuple[MallOrder, bool]:
    """Redeem at the item's current price (order key `mp:<member>:<client_key>`). Returns the order and
    whether it is a replay of the key; the same key with another item, qty or address → 409. A pick-up
    that is ready tells the member its code."""
    key = f"mp:{member.id}:{client_key}"
    item = await get_item(merchant.id, item_id)
    shipping = validate_address(ItemKind(item.kind), address)
    existing = await MallOrder.get_or_none(merchant_id=merchant.id, idempotency_key=key)
    if existing is not None:
        return _same_redemption(existing, item_id, qty, shipping), True
    order, replayed = await place_order_once(
        merchant, member, item, qty=qty, points=item.price_points * qty, key=key, now=now, address=address
    )
    if not replayed and order.status == OrderStatus.AWAITING_PICKUP:
        await tell_pickup_ready(effects, merchant, order, item)
    return _same_redemption(order, item_id, qty, shipping), replayed


async def tell_pickup_ready(effects: Effects, merchant: Merchant, order: MallOrder, item: MallItem) -> None:
    await tell(
        effects,
        "pickup_ready",
        merchant_id=merchant.id,
        member_id=order.member_id,
        event_key=f"order:{order.id}",
        context={
            "item": item.name,
            "code": order.open_pickup_code or "",
            "deadline": local_time(order.pickup_deadline, merchant.timezone) if order.pickup_deadline else "",
        },
    )


def _same_redemption(order: MallOrder, item_id: int, qty: int, shipping: dict[str, str] | None) -> MallOrder:
    recorded = {k: v for k, v in (order.address or {}).items() if k != "shipment"} or None
    if (order.item_id, order.qty, recorded) != (item_id, qty, shipping):
        raise IdempotencyMismatch()
    return order


async def cancel(merchant: Merchant, member: Member, order_id: int, *, now: datetime) -> MallOrder:
    """The member cancels their order before pick-up or shipping: points and stock back, once."""
    if not await MallOrder.exists(id=order_id, merchant_id=merchant.id, member_id=member.id):
        raise NotFound("订单不存在", field="order_id")
    return await return_order(order_id, reason="cancel", now=now, actor=f"member:{member.id}")


# Order lists --------------------------------------------------------------------------------------


async def orders_page(
    merchant_id: int,
    *,
    member_id: int | None = None,
    status: OrderStatus | None = None,
    open_only: bool = False,
    cursor: int | None = None,
    limit: int = 20,
) -> tuple[list[MallOrder], int | None]:
    """Orders newest first (with their item), and the cursor of the next page (None at the end)."""
    query = MallOrder.filter(merchant_id=merchant_id)
    if member_id is not None:
        query = query.filter(member_id=member_id)
    if status is not None:
        query = query.filter(status=status)
    if open_only:
        query = query.filter(status__in=OPEN)
    if cursor is not None:
        query = query.filter(id__lt=cursor)
    rows = await query.order_by("-id").limit(limit + 1).prefetch_related("item")
    page = rows[:limit]
    return page, page[-1].id if len(rows) > limit else None


async def member_order(merchant_id: int, member_id: int, order_id: int) -> MallOrder:
    order = await MallOrder.get_or_none(id=order_id, merchant_id=merchant_id, member_id=member_id)
    if order is None:
        raise NotFound("订单不存在", field="order_id")
    await order.fetch_related("item")
    return order


# Staff: pick-up verification and shipping ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verified:
    order: MallOrder
    item_name: str
    member_code: str
    member_name: str | None


async def verify_pickup(
    merchant: Merchant, staff: Staff, raw_code: str, *, now: datetime, store_id: int | None = None
) -> Verified:
    """Hand over a pick-up order once: FULFILLED, verified_at/by and the handing-over store set, code
    released.

    A code already used is refused (409) naming who verified it and when; an expired or cancelled
    order's code is refused with that reason. Concurrent verifies of one code: exactly one succeeds.
    """
    code = normalise_pickup_code(raw_code)
    if not is_pickup_code(code, CODE_ALPHABET):
        raise NotFound("提货码不存在", field="code")
    async with in_transaction():
        order = await MallOrder.select_for_update().get_or_none(
            merchant_id=merchant.id, open_pickup_code=code
        )
        if order is None:
            raise await _used_code(merchant, code)
        if order.status != OrderStatus.AWAITING_PICKUP:
            raise OrderClosed(f"订单{STATUS_LABELS[OrderStatus(order.status)]}，不能核销", field="code")
        if order.pickup_deadline is not None and order.pickup_deadline <= now:
            deadline = local_time(order.pickup_deadline, merchant.timezone)
            raise OrderClosed(f"提货码已过期（提货截止 {deadline}）", field="code")
        member = await Member.get(id=order.member_id)
        blocking.ensure_active(member)
        order.status, order.verified_at, order.verified_by_id = OrderStatus.FULFILLED, now, staff.id
        order.closed_at, order.open_pickup_code, order.store_id = now, None, store_id
        await order.save(
            update_fields=[
                "status",
                "verified_at",
                "verified_by_id",
                "closed_at",
                "open_pickup_code",
                "store_id",
            ]
        )
    item = await MallItem.get(id=order.item_id)
    return Verified(order, item.name, member.code, member.name)


async def _used_code(merchant: Merchant, code: str) -> DomainError:
    order = await MallOrder.filter(merchant_id=merchant.id, pickup_code=code).order_by("-id").first()
    if order is None:
        return NotFound("提货码不存在", field="code")
    status = OrderStatus(order.status)
    if status is OrderStatus.FULFILLED and order.verified_at is not None:
        staff = await Staff.get_or_none(id=order.verified_by_id) if order.verified_by_id else None
        who = staff.username if staff is not None else "未知员工"
        when = local_time(order.verified_at, merchant.timezone)
        return OrderClosed(f"该提货码已于 {when} 由 {who} 核销，不能重复核销", field="code")
    if status is OrderStatus.EXPIRED and order.pickup_deadline is not None:
        deadline = local_time(order.pickup_deadline, merchant.timezone)
        return OrderClosed(f"提货码已过期（提货截止 {deadline}），积分与库存已退回", field="code")
    return OrderClosed(f"订单{STATUS_LABELS[status]}，不能核销", field="code")


async def ship(
    merchant: Merchant,
    staff: Staff,
    order_id: int,
    *,
    carrier: str,
    tracking_no: str,
    now: datetime,
    effects: Effects,
) -> MallOrder:
    """TO_SHIP → SHIPPED; carrier and tracking number are kept with the address (audit-logged)."""
    async with in_transaction():
        order = await MallOrder.select_for_update().get_or_none(id=order_id, merchant_id=merchant.id)
        if order is None:
            raise NotFound("订单不存在", field="order_id")
        if order.status != OrderStatus.TO_SHIP:
            raise OrderClosed(f"订单{STATUS_LABELS[OrderStatus(order.status)]}，不能发货", field="order_id")
        shipment = {
            "carrier": carrier,
            "tracking_no": tracking_no,
            "shipped_at": now.isoformat(),
            "shipped_by": staff.username,
        }
        order.status, order.address = OrderStatus.SHIPPED, {**(order.address or {}), "shipment": shipment}
        await order.save(update_fields=["status", "address"])
        await audit_log.record(
            merchant.id,
            f"staff:{staff.id}",
            "mall.order.ship",
            str(order.id),
            carrier=carrier,
            tracking_no=tracking_no,
        )
    item = await MallItem.get(id=order.item_id)
    await tell(
        effects,
        "order_shipped",
        merchant_id=merchant.id,
        member_id=order.member_id,
        event_key=f"order:{order.id}",
        context={"item": item.name, "carrier": carrier, "tracking_no": tracking_no},
    )
    return order
