"""The points mall: items, their stock ledger, redemption orders, flash sales and group deals."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.coupon import CouponTemplate
    from models.member import Member
    from models.merchant import Merchant, Store
    from models.staff import Staff


class ItemKind(StrEnum):
    PICKUP = "pickup"  # physical, picked up in store with a code
    SHIPPED = "shipped"  # physical, shipped to an address
    COUPON = "coupon"  # issues a coupon from a template
    STORED_VALUE = "stored_value"  # tops up the member's stored value


class MallItem(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    kind = fields.CharEnumField(ItemKind, max_length=16)
    name = fields.CharField(max_length=64)
    description = fields.TextField(default="")
    image_url = fields.CharField(max_length=512, default="")
    category = fields.CharField(max_length=32, default="")
    price_points = fields.IntField()
    cash_fen = fields.IntField(default=0)  # paid at the till at pick-up
    stock = fields.IntField(default=0)  # units left; changed only with a StockMovement row
    # 库存预警: the stock ranking flags the item when its stock is at or below this (NULL: never).
    low_stock_threshold = fields.IntField(null=True)
    limit_per_member = fields.IntField(null=True)  # lifetime
    limit_per_day = fields.IntField(null=True)  # per member per merchant-local day
    min_tier_rank = fields.IntField(default=0)
    sale_starts_at = fields.DatetimeField(null=True)
    sale_ends_at = fields.DatetimeField(null=True)
    coupon_template: fields.ForeignKeyNullableRelation[CouponTemplate] = fields.ForeignKeyField(
        "models.CouponTemplate", null=True, on_delete=fields.RESTRICT
    )
    coupon_template_id: int | None
    stored_value_fen = fields.IntField(default=0)  # for STORED_VALUE items
    pickup_days = fields.IntField(default=14)  # an order not picked up by then returns points and stock
    active = fields.BooleanField(default=True)
    sort = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "mall_item"
        indexes = (("merchant_id", "active", "sort"),)


class StockMovement(Model):
    """Append-only: every change of an item's stock, with the reason and a unique key."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    item: fields.ForeignKeyRelation[MallItem] = fields.ForeignKeyField(
        "models.MallItem", related_name="movements", on_delete=fields.RESTRICT
    )
    item_id: int
    delta = fields.IntField()
    stock_after = fields.IntField()
    reason = fields.CharField(max_length=24)  # restock, redeem, cancel, expire, group_refund, adjust
    idempotency_key = fields.CharField(max_length=128)
    actor = fields.CharField(max_length=32, default="system")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "stock_movement"
        unique_together = (("merchant", "idempotency_key"),)
        indexes = (("item_id", "id"),)


class OrderStatus(StrEnum):
    PENDING_GROUP = "pending_group"  # waiting for a group deal to fill
    AWAITING_PICKUP = "awaiting_pickup"
    TO_SHIP = "to_ship"
    SHIPPED = "shipped"
    FULFILLED = "fulfilled"  # picked up, or a virtual item delivered
    CANCELLED = "cancelled"  # by the member before verification
    EXPIRED = "expired"  # not picked up in time
    GROUP_FAILED = "group_failed"  # the group did not fill in time


class MallOrder(Model):
    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="mall_orders", on_delete=fields.RESTRICT
    )
    member_id: int
    item: fields.ForeignKeyRelation[MallItem] = fields.ForeignKeyField(
        "models.MallItem", related_name="orders", on_delete=fields.RESTRICT
    )
    item_id: int
    qty = fields.IntField()
    points = fields.IntField()  # total points paid
    cash_fen = fields.IntField(default=0)  # total cash due at pick-up
    status = fields.CharEnumField(OrderStatus, max_length=16)
    idempotency_key = fields.CharField(max_length=128)
    # Unique among OPEN orders of the merchant: enforced by `open_pickup_code`, which is NULL once closed.
    pickup_code = fields.CharField(max_length=16, null=True)
    open_pickup_code = fields.CharField(max_length=16, null=True)
    pickup_deadline = fields.DatetimeField(null=True)
    address: Any = fields.JSONField(null=True)
    flash_sale: fields.ForeignKeyNullableRelation[FlashSale] = fields.ForeignKeyField(
        "models.FlashSale", null=True, on_delete=fields.RESTRICT
    )
    flash_sale_id: int | None
    group: fields.ForeignKeyNullableRelation[DealGroup] = fields.ForeignKeyField(
        "models.DealGroup", null=True, related_name="orders", on_delete=fields.RESTRICT
    )
    group_id: int | None
    verified_at = fields.DatetimeField(null=True)
    verified_by: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", null=True, on_delete=fields.RESTRICT
    )
    verified_by_id: int | None
    # The store that handed a pick-up order over (the verifying staff's store).
    store: fields.ForeignKeyNullableRelation[Store] = fields.ForeignKeyField(
        "models.Store", null=True, on_delete=fields.RESTRICT
    )
    store_id: int | None
    closed_at = fields.DatetimeField(null=True)
    local_day = fields.DateField()  # merchant-local day of the order, for per-day limits
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "mall_order"
        unique_together = (
            ("merchant", "idempotency_key"),
            ("merchant", "open_pickup_code"),
            ("group", "member"),
        )
        indexes = (("member_id", "item_id", "local_day"), ("status", "pickup_deadline"))


class FlashSale(Model):
    """秒杀: during [starts_at, ends_at) stock and per-member limits are gated in Redis first."""

    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    item: fields.ForeignKeyRelation[MallItem] = fields.ForeignKeyField(
        "models.MallItem", related_name="flash_sales", on_delete=fields.RESTRICT
    )
    item_id: int
    price_points = fields.IntField()
    stock = fields.IntField()  # units allotted to the sale (taken from the item's stock when created)
    sold = fields.IntField(default=0)
    limit_per_member = fields.IntField(default=1)
    starts_at = fields.DatetimeField()
    ends_at = fields.DatetimeField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "flash_sale"


class GroupDeal(Model):
    """拼团: the item at `price_points` when `group_size` members join one group within `hours`."""

    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    item: fields.ForeignKeyRelation[MallItem] = fields.ForeignKeyField(
        "models.MallItem", related_name="group_deals", on_delete=fields.RESTRICT
    )
    item_id: int
    price_points = fields.IntField()
    group_size = fields.IntField()
    hours = fields.IntField()
    starts_at = fields.DatetimeField()
    ends_at = fields.DatetimeField()
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "group_deal"


class GroupStatus(StrEnum):
    OPEN = "open"
    FILLED = "filled"
    FAILED = "failed"


class DealGroup(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    deal: fields.ForeignKeyRelation[GroupDeal] = fields.ForeignKeyField(
        "models.GroupDeal", related_name="groups", on_delete=fields.RESTRICT
    )
    deal_id: int
    leader: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", on_delete=fields.RESTRICT
    )
    leader_id: int
    status = fields.CharEnumField(GroupStatus, max_length=8, default=GroupStatus.OPEN)
    joined = fields.IntField(default=0)
    expires_at = fields.DatetimeField()
    closed_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "deal_group"
        indexes = (("status", "expires_at"),)
