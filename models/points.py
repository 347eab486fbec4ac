"""The points ledger: one account per member, append-only transactions, and expiry lots.

Invariants (checked by `memberbot audit points`):
  account.balance == sum(transaction.delta)
  sum(available lot.remaining) == max(account.balance, 0)   (a refund claw-back may leave a debt)
  account.pending == sum(pending lot.remaining)

One writer posts to these tables: the `memberbot_points_*` functions of migration 0010, called by
`handlers.loyalty.ledger` and by the check-in function. A migration that changes a column here must
replace those functions too.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.member import Member
    from models.merchant import Merchant


class PointsKind(StrEnum):
    EARN_PURCHASE = "earn_purchase"
    EARN_CHECKIN = "earn_checkin"
    EARN_REFERRAL = "earn_referral"
    EARN_REGISTRATION = "earn_registration"
    EARN_PROFILE = "earn_profile"
    EARN_PROMOTION = "earn_promotion"
    EARN_TIER_GIFT = "earn_tier_gift"
    GRANT = "grant"
    OPENING = "opening"  # the balance a member brought from the merchant's previous system (import)
    SPEND_REDEMPTION = "spend_redemption"
    SPEND_OFFSET = "spend_offset"
    SPEND_UPGRADE = "spend_upgrade"
    SPEND_MAKEUP = "spend_makeup"
    EXPIRE = "expire"
    REVERSE = "reverse"
    ADJUST = "adjust"


class LotStatus(StrEnum):
    PENDING = "pending"
    AVAILABLE = "available"
    VOIDED = "voided"


class PointsAccount(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.OneToOneRelation[Member] = fields.OneToOneField(
        "models.Member", related_name="points_account", on_delete=fields.RESTRICT
    )
    member_id: int
    balance = fields.IntField(default=0)
    pending = fields.IntField(default=0)
    lifetime_earned = fields.IntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "points_account"


class PointsTransaction(Model):
    """One append-only ledger row. Never updated, never deleted."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="points_transactions", on_delete=fields.RESTRICT
    )
    member_id: int
    delta = fields.IntField()
    kind = fields.CharEnumField(PointsKind, max_length=24)
    idempotency_key = fields.CharField(max_length=128)
    reference = fields.CharField(max_length=64, default="")
    balance_after = fields.IntField()
    actor = fields.CharField(max_length=32, default="system")
    reason = fields.CharField(max_length=255, default="")
    reverses: fields.ForeignKeyNullableRelation[PointsTransaction] = fields.ForeignKeyField(
        "models.PointsTransaction", related_name="reversals", null=True, on_delete=fields.RESTRICT
    )
    reverses_id: int | None
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "points_transaction"
        unique_together = (("merchant", "idempotency_key"),)
        indexes = (("member_id", "created_at"), ("merchant_id", "kind", "created_at"))


class PointsLot(Model):
    """Points earned together, with one expiry. Spending draws from the soonest-expiring lots first."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="points_lots", on_delete=fields.RESTRICT
    )
    member_id: int
    source: fields.ForeignKeyNullableRelation[PointsTransaction] = fields.ForeignKeyField(
        "models.PointsTransaction", related_name="lots", null=True, on_delete=fields.RESTRICT
    )
    source_id: int | None
    source_key = fields.CharField(max_length=128)
    amount = fields.IntField()
    remaining = fields.IntField()
    status = fields.CharEnumField(LotStatus, max_length=12)
    earned_at = fields.DatetimeField()
    available_at = fields.DatetimeField(null=True)
    expires_at = fields.DatetimeField(null=True)

    class Meta:
        table = "points_lot"
        unique_together = (("merchant", "source_key"),)
        indexes = (
            ("member_id", "status", "expires_at"),
            ("status", "expires_at"),
            ("status", "available_at"),
        )


class PointsDraw(Model):
    """How much one debit took from one lot (so a reversal can restore exactly those lots)."""

    id = fields.BigIntField(primary_key=True)
    transaction: fields.ForeignKeyRelation[PointsTransaction] = fields.ForeignKeyField(
        "models.PointsTransaction", related_name="draws", on_delete=fields.RESTRICT
    )
    transaction_id: int
    lot: fields.ForeignKeyRelation[PointsLot] = fields.ForeignKeyField(
        "models.PointsLot", related_name="draws", on_delete=fields.RESTRICT
    )
    lot_id: int
    amount = fields.IntField()

    class Meta:
        table = "points_draw"


class PointsPool(Model):
    """A campaign's points budget. `granted` never exceeds `budget`, even under concurrency."""

    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    code = fields.CharField(max_length=64)
    budget = fields.IntField()
    granted = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "points_pool"
        unique_together = (("merchant", "code"),)
