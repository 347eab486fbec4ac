"""Mall orders: the transactional core other features build on, pick-up verification, expiry, shipping.

Lock order, everywhere: the member's points account (`points.lock_account`), then the item row, then
the order row. Every stock change is one append-only `StockMovement` (unique key) written by
`move_stock`; every points change goes through the points ledger with a key derived from the
order's key (`mall:<key>` for the debit, `mall:<key>:return` for its reversal).

Public contracts (used by flash sales and group deals — keep them stable):
`place_order`, `open_pickup`, `return_order`, `OrderClosed`, `move_stock`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core.errors import (
    Conflict,
    IdempotencyMismatch,
    NotFound,
    ValidationError,
)
from handlers.core.queries import sum_of
from handlers.coupons import redeem as coupons
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger, tiers
from handlers.members import blocking
from handlers.members.lookup import CODE_ALPHABET
from handlers.members.profile import parse_phone
from handlers.rules.calendar import local_day
from handlers.rules.mall import (
    MAX_QTY,
    ItemTerms,
    MemberStanding,
    new_pickup_code,
    refusal,
)
from handlers.wallet import ledger as wallet
from models.mall import ItemKind, MallItem, MallOrder, OrderStatus, StockMovement
from models.member import Member
from models.merchant import Merchant
from models.points import PointsAccount, PointsKind, PointsTransaction

ReturnReason = Literal["cancel", "expire", "group_refund"]
RETURNED = (OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.GROUP_FAILED)
OPEN = (OrderStatus.PENDING_GROUP, OrderStatus.AWAITING_PICKUP, OrderStatus.TO_SHIP, OrderStatus.SHIPPED)
MAX_CODE_ATTEMPTS = 8
ADDRESS_FIELDS = (("name", "收货人", 32), ("region", "所在地区", 64), ("detail", "详细地址", 128))
_RETURN_TO: dict[str, OrderStatus] = {
    "cancel": OrderStatus.CANCELLED,
    "expire": OrderStatus.EXPIRED,
    "group_refund": OrderStatus.GROUP_FAILED,
}
_RETURNABLE: dict[str, tuple[OrderStatus, ...]] = {
    "cancel": (OrderStatus.AWAITING_PICKUP, OrderStatus.TO_SHIP),
    "expire": (OrderStatus.AWAITING_PICKUP,),
    "group_refund": (OrderStatus.PENDING_GROUP,),
}
STATUS_LABELS = {
    OrderStatus.PENDING_GROUP: "拼团中",
    OrderStatus.AWAITING_PICKUP: "待提货",
    OrderStatus.TO_SHIP: "待发货",
    OrderStatus.SHIPPED: "已发货",
    OrderStatus.FULFILLED: "已完成",
    OrderStatus.CANCELLED: "已取消",
    OrderStatus.EXPIRED: "已过期",
    OrderStatus.GROUP_FAILED: "拼团失败",
}

log = logging.getLogger(__name__)


class OrderClosed(Conflict):
    """The order is not in a state the requested change applies to (e.g. already returned)."""


def zone(merchant_or_tz: Merchant | str) -> ZoneInfo:
    return ZoneInfo(merchant_or_tz if isinstance(merchant_or_tz, str) else merchant_or_tz.timezone)


def local_time(moment: datetime, tz: str) -> str:
    return moment.astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M")


# Stock --------------------------------------------------------------------------------------------


async def move_stock(item: MallItem, delta: int, reason: str, *, key: str, actor: str) -> StockMovement:
    """Change the stock of `item` (locked FOR UPDATE by the caller, in its transaction) by `delta`.

    Writes the append-only movement with the merchant-unique `key`; refused if stock would go below 0.
    """
    after = item.stock + delta
    if after < 0:
        raise Conflict(f"库存不足：当前库存 {item.stock}", field="stock")
    item.stock = after
    await item.save(update_fields=["stock", "updated_at"])
    return await StockMovement.create(
        merchant_id=item.merchant_id,
        item_id=item.id,
        delta=delta,
        stock_after=after,
        reason=reason,
        idempotency_key=key,
        actor=actor[:32],
    )


# Placing an order ---------------------------------------------------------------------------------


def validate_address(kind: ItemKind, raw: dict[str, Any] | None) -> dict[str, str] | None:
    """A shipped item needs {name, phone, region, detail}; any other kind refuses an address."""
    if kind is not ItemKind.SHIPPED:
        if raw is not None:
            raise ValidationError("该商品无需填写收货地址", field="address")
        return None
    if raw is None:
        raise ValidationError("请填写收货地址", field="address")
    address: dict[str, str] = {}
    for name, label, longest in ADDRESS_FIELDS:
        value = raw.get(name)
        text = value.strip() if isinstance(value, str) else ""
        if not text or len(text) > longest or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
            raise ValidationError(f"{label}须为 1–{longest} 个字符", field=f"address.{name}")
        address[name] = text
    phone = raw.get("phone")
    try:
        address["phone"] = parse_phone(phone if isinstance(phone, str) else "")
    except ValidationError as exc:
        raise ValidationError(exc.message, field="address.phone") from None
    return address


async def standing(merchant: Merchant, member_id: int, item: MallItem, now: datetime) -> MemberStanding:
    """The member's tier rank and the units of `item` they hold (orders not returned), total and today."""
    _, ladder = await loyalty_config.current_tiers(merchant.id)
    rank = loyalty_config.tier_by_code(ladder, await tiers.tier_code(merchant.id, member_id)).rank
    held = MallOrder.filter(member_id=member_id, item_id=item.id).exclude(status__in=RETURNED)
    total = await sum_of(held, "qty")
    today = await sum_of(held.filter(local_day=local_day(now, merchant.timezone)), "qty")
    return MemberStanding(tier_rank=rank, bought_total=total, bought_today=today)


def terms(item: MallItem) -> ItemTerms:
    return ItemTerms(
        active=item.active,
        stock=item.stock,
        min_tier_rank=item.min_tier_rank,
        limit_per_member=item.limit_per_member,
        limit_per_day=item.limit_per_day,
        sale_starts_at=item.sale_starts_at,
        sale_ends_at=item.sale_ends_at,
    )


async def _replay(
    merchant_id: int, key: str, member_id: int, item_id: int, qty: int, points_total: int
) -> MallOrder | None:
    order = await MallOrder.get_or_none(merchant_id=merchant_id, idempotency_key=key)
    if order is None:
        return None
    if (order.member_id, order.item_id, order.qty, order.points) != (member_id, item_id, qty, points_total):
        raise IdempotencyMismatch()
    return order


async def place_order(
    merchant: Merchant,
    member: Member,
    item: MallItem,
    *,
    qty: int,
    points: int,
    key: str,
    now: datetime,
    flash_sale_id: int | None = None,
    group_id: int | None = None,
    status: OrderStatus | None = None,
    address: dict[str, Any] | None = None,
    take_stock: bool = True,
) -> MallOrder:
    """Redeem `qty` units of `item` for `points` points in total: one transaction, or nothing changes.

    - `key`: unique per merchant for this order (include the member: `mp:<member>:<client key>`).
      A repeated key returns the first order (whatever its status now); the same key with a different
      member, item, qty or points raises IDEMPOTENCY_MISMATCH (409).
    - Locks the points account, then the item row. Checks, in order: item active, sale window (skipped
      when `flash_sale_id` is given — the sale has its own window), tier rank, stock (skipped when
      `take_stock=False`: a flash sale already allotted the units), the per-member lifetime and
      per-local-day limits (orders not returned, flash and group orders included). A refusal is a
      `Conflict` whose message names the reason and whose `field` is a `Refusal` value.
    - Debits `points` (`SPEND_REDEMPTION`, key `mall:<key>`; `NotEnoughPoints` if short; none if 0),
      takes stock with a `redeem` movement (key `mall:<key>:stock`) when `take_stock`, creates the order.
    - `status=None`: fulfilled at once by kind — pickup → AWAITING_PICKUP with a pick-up code and
      deadline; shipped → TO_SHIP (`address` required and validated); coupon / stored value → delivered,
      FULFILLED. `status=OrderStatus.PENDING_GROUP`: nothing is delivered and no code is issued until
      `open_pickup(order.id, now=...)` is called when the group fills.
    """
    order, _ = await place_order_once(
        merchant,
        member,
        item,
        qty=qty,
        points=points,
        key=key,
        now=now,
        flash_sale_id=flash_sale_id,
        group_id=group_id,
        status=status,
        address=address,
        take_stock=take_stock,
    )
    return order


async def place_order_once(
    merchant: Merchant,
    member: Member,
    item: MallItem,
    *,
    qty: int,
    points: int,
    key: str,
    now: datetime,
    flash_sale_id: int | None = None,
    group_id: int | None = None,
    status: OrderStatus | None = None,
    address: dict[str, Any] | None = None,
    take_stock: bool = True,
) -> tuple[MallOrder, bool]:
    """`place_order`, also telling whether the key was used before (True: nothing new happened)."""
    if status not in (None, OrderStatus.PENDING_GROUP):
        raise ValueError("status may only be None or PENDING_GROUP")
    if not 1 <= qty <= MAX_QTY:
        raise ValidationError(f"数量须在 1–{MAX_QTY} 之间", field="qty")
    if points < 0:
        raise ValueError("points must not be negative")
    async with in_transaction():
        account = await ledger.lock_account(merchant.id, member.id)
        if (replayed := await _replay(merchant.id, key, member.id, item.id, qty, points)) is not None:
            return replayed, True
        blocking.ensure_active(member)  # mall redemptions, flash sales and group deals alike
        order = await _place_locked(
            merchant,
            account,
            member,
            item,
            qty=qty,
            total=points,
            key=key,
            now=now,
            flash_sale_id=flash_sale_id,
            group_id=group_id,
            status=status,
            address=address,
            take_stock=take_stock,
        )
        return order, False


async def _place_locked(
    merchant: Merchant,
    account: PointsAccount,
    member: Member,
    item: MallItem,
    *,
    qty: int,
    total: int,
    key: str,
    now: datetime,
    flash_sale_id: int | None,
    group_id: int | None,
    status: OrderStatus | None,
    address: dict[str, Any] | None,
    take_stock: bool,
) -> MallOrder:
    locked = await MallItem.select_for_update().get_or_none(id=item.id, merchant_id=merchant.id)
    if locked is None:
        raise NotFound("商品不存在", field="item_id")
    held = await standing(merchant, member.id, locked, now)
    refused = refusal(
        terms(locked), held, qty, now, check_window=flash_sale_id is None, check_stock=take_stock
    )
    if refused is not None:
        raise Conflict(refused.message, field=refused.value)
    shipping = validate_address(ItemKind(locked.kind), address)
    actor = f"member:{member.id}"
    if total:
        await ledger.debit_locked(
            account,
            total,
            PointsKind.SPEND_REDEMPTION,
            key=f"mall:{key}",
            now=now,
            reference=f"mall:{locked.id}",
            actor=actor,
            reason=f"积分兑换 {locked.name}×{qty}",
        )
    if take_stock:
        await move_stock(locked, -qty, "redeem", key=f"mall:{key}:stock", actor=actor)
    order = await MallOrder.create(
        merchant_id=merchant.id,
        member_id=member.id,
        item_id=locked.id,
        qty=qty,
        points=total,
        cash_fen=locked.cash_fen * qty,
        status=status or OrderStatus.PENDING_GROUP,
        idempotency_key=key,
        address=shipping,
        flash_sale_id=flash_sale_id,
        group_id=group_id,
        local_day=local_day(now, merchant.timezone),
    )
    if status is None:
        await _fulfil(merchant, order, locked, now)
    return order


async def _fulfil(merchant: Merchant, order: MallOrder, item: MallItem, now: datetime) -> None:
    """Move a just-placed (or just-filled group) order to its kind's state; deliver virtual items."""
    kind = ItemKind(item.kind)
    if kind is ItemKind.PICKUP:
        order.status = OrderStatus.AWAITING_PICKUP
        order.pickup_deadline = now + timedelta(days=item.pickup_days)
        await order.save(update_fields=["status", "pickup_deadline"])
        await _assign_code(order)
        return
    if kind is ItemKind.SHIPPED:
        order.status = OrderStatus.TO_SHIP
        await order.save(update_fields=["status"])
        return
    await _deliver(merchant, order, item, kind, now)
    order.status, order.closed_at = OrderStatus.FULFILLED, now
    await order.save(update_fields=["status", "closed_at"])


async def _deliver(
    merchant: Merchant, order: MallOrder, item: MallItem, kind: ItemKind, now: datetime
) -> None:
    key = order.idempotency_key
    if kind is ItemKind.STORED_VALUE:
        await wallet.credit_mall(
            merchant, order.member_id, item.stored_value_fen * order.qty, key=f"mall:{key}", now=now
        )
        return
    if item.coupon_template_id is None:
        raise ValidationError("优惠券商品未指定优惠券模板", field="coupon_template_id")
    for n in range(1, order.qty + 1):
        await coupons.issue(
            merchant,
            order.member_id,
            item.coupon_template_id,
            source="mall",
            key=f"mall:{key}" if n == 1 else f"mall:{key}:{n}",
            now=now,
            actor=f"member:{order.member_id}",
        )


async def _assign_code(order: MallOrder) -> None:
    """A random pick-up code, unique among the merchant's open orders (a collision draws again)."""
    for _ in range(MAX_CODE_ATTEMPTS):
        code = new_pickup_code(CODE_ALPHABET)
        if await MallOrder.filter(merchant_id=order.merchant_id, open_pickup_code=code).exists():
            continue
        try:
            async with in_transaction():  # a savepoint: a lost race does not abort the order
                await MallOrder.filter(id=order.id).update(pickup_code=code, open_pickup_code=code)
        except IntegrityError:
            continue
        order.pickup_code = order.open_pickup_code = code
        return
    raise RuntimeError("could not allocate a unique pick-up code")


async def open_pickup(order_id: int, *, now: datetime) -> MallOrder:
    """A group order's group filled: fulfil it now (pickup → code and deadline from `now`; shipped →
    TO_SHIP; coupon / stored value → delivered). Idempotent: an order no longer PENDING_GROUP is
    returned unchanged, except a returned one (GROUP_FAILED, …), which raises `OrderClosed`."""
    async with in_transaction():
        order = await MallOrder.select_for_update().get_or_none(id=order_id)
        if order is None:
            raise NotFound("订单不存在", field="order_id")
        if order.status in RETURNED:
            raise OrderClosed(f"订单{STATUS_LABELS[OrderStatus(order.status)]}", field="order_id")
        if order.status != OrderStatus.PENDING_GROUP:
            return order
        merchant = await Merchant.get(id=order.merchant_id)
        await _fulfil(merchant, order, await MallItem.get(id=order.item_id), now)
        return order


# Returning an order -------------------------------------------------------------------------------


async def return_order(order_id: int, *, reason: ReturnReason, now: datetime, actor: str) -> MallOrder:
    """Give an order's points and stock back exactly once, and close it.

    `reason`: "cancel" (AWAITING_PICKUP or TO_SHIP → CANCELLED), "expire" (AWAITING_PICKUP past its
    deadline → EXPIRED), "group_refund" (PENDING_GROUP → GROUP_FAILED). Locks the points account, the
    item, then the order, and re-checks the status under the lock, so concurrent returns of one order
    return once: the others raise `OrderClosed` (a 409 naming the current status), as does a reason
    that does not apply. The debit `mall:<key>` is reversed with `points.reverse` (key
    `mall:<key>:return`); the units go back to the item's stock with a movement of reason
    `cancel` / `expire` / `group_refund` (key `mall:<key>:return`) — also for flash-sale orders.
    The pick-up code is released (`open_pickup_code` NULL).
    """
    row = await MallOrder.get_or_none(id=order_id)
    if row is None:
        raise NotFound("订单不存在", field="order_id")
    async with in_transaction():
        await ledger.lock_account(row.merchant_id, row.member_id)
        item = await MallItem.select_for_update().get(id=row.item_id)
        order = await MallOrder.select_for_update().get(id=order_id)
        _check_returnable(order, reason, now)
        key = order.idempotency_key
        debit_key = f"mall:{key}"
        if await PointsTransaction.exists(merchant_id=order.merchant_id, idempotency_key=debit_key):
            await ledger.reverse(
                order.merchant_id,
                debit_key,
                key=f"mall:{key}:return",
                now=now,
                actor=actor,
                reason=f"兑换退回（{STATUS_LABELS[_RETURN_TO[reason]]}）",
            )
        await move_stock(item, order.qty, reason, key=f"mall:{key}:return", actor=actor)
        order.status, order.closed_at, order.open_pickup_code = _RETURN_TO[reason], now, None
        await order.save(update_fields=["status", "closed_at", "open_pickup_code"])
        return order


def _check_returnable(order: MallOrder, reason: ReturnReason, now: datetime) -> None:
    status = OrderStatus(order.status)
    if status not in _RETURNABLE[reason]:
        raise OrderClosed(f"订单{STATUS_LABELS[status]}，不能{_VERBS[reason]}", field="order_id")
    if reason == "expire" and (order.pickup_deadline is None or order.pickup_deadline > now):
        raise OrderClosed("订单尚未到提货截止时间", field="order_id")


_VERBS = {"cancel": "取消", "expire": "过期退回", "group_refund": "拼团退回"}


async def expire_pickups(now: datetime) -> dict[str, int]:
    """The periodic job: orders still awaiting pick-up past their deadline expire, points and stock
    back. Selects due-and-not-done, so a second run (or a racing cancel) returns nothing twice."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    due: list[int] = (
        await MallOrder.filter(  # type: ignore[assignment]
            status=OrderStatus.AWAITING_PICKUP, pickup_deadline__lte=now
        )
        .order_by("id")
        .values_list("id", flat=True)
    )
    expired = 0
    for order_id in due:
        try:
            await return_order(order_id, reason="expire", now=now, actor="system")
        except OrderClosed:
            continue  # cancelled or picked up meanwhile
        except Exception:  # one order's failure must not hold back everyone else's returns
            log.exception("pick-up expiry failed for an order", extra={"order_id": order_id})
            continue
        expired += 1
    return {"expired_orders": expired}
