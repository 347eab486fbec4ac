"""Purchases at the till: what was paid, what it earned, and its refund."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.member import Member
    from models.merchant import Merchant, Store
    from models.staff import Staff


class PurchaseStatus(StrEnum):
    COMPLETED = "completed"
    REFUNDED = "refunded"


class Purchase(Model):
    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="purchases", on_delete=fields.RESTRICT
    )
    member_id: int
    store: fields.ForeignKeyNullableRelation[Store] = fields.ForeignKeyField(
        "models.Store", null=True, on_delete=fields.RESTRICT
    )
    store_id: int | None
    staff: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", null=True, related_name="purchases", on_delete=fields.RESTRICT
    )
    staff_id: int | None
    idempotency_key = fields.CharField(max_length=128)
    request_digest = fields.CharField(max_length=64)
    amount_fen = fields.BigIntField()
    discount_fen = fields.BigIntField(default=0)
    offset_points = fields.IntField(default=0)
    offset_fen = fields.BigIntField(default=0)
    paid_fen = fields.BigIntField()
    points_earned = fields.IntField(default=0)
    points_pending = fields.BooleanField(default=False)
    rule_set_version = fields.IntField(null=True)
    # Snapshots the what-if simulator replays purchases with.
    tier_code = fields.CharField(max_length=32, default="")
    period_spend_fen = fields.BigIntField(default=0)
    points_today_before = fields.IntField(default=0)
    breakdown: Any = fields.JSONField(default=list)
    items: Any = fields.JSONField(default=list)
    status = fields.CharEnumField(PurchaseStatus, max_length=12, default=PurchaseStatus.COMPLETED)
    refunded_at = fields.DatetimeField(null=True)
    refund_key = fields.CharField(max_length=128, null=True)
    result: Any = fields.JSONField(null=True)  # the response, replayed for a repeated idempotency key
    pool_code = fields.CharField(max_length=64, null=True)  # the points pool its points came from
    refunded_by: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", null=True, related_name="refunds", on_delete=fields.RESTRICT
    )
    refunded_by_id: int | None
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "purchase"
        unique_together = (("merchant", "idempotency_key"),)
        indexes = (("merchant_id", "created_at"), ("member_id", "created_at"))
