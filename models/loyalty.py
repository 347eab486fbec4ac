"""A merchant's loyalty configuration: programme settings, versioned earn rules and tiers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.member import Member
    from models.merchant import Merchant


class LoyaltyProgram(Model):
    """Per-merchant settings validated by handlers.loyalty.config before they are saved."""

    id = fields.IntField(primary_key=True)
    merchant: fields.OneToOneRelation[Merchant] = fields.OneToOneField(
        "models.Merchant", related_name="loyalty_program", on_delete=fields.RESTRICT
    )
    merchant_id: int
    settings: Any = fields.JSONField(default=dict)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "loyalty_program"


class RuleSetVersion(Model):
    """An immutable earn rule set. Each purchase records the version its points came from."""

    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    version = fields.IntField()
    rules: Any = fields.JSONField()
    created_by = fields.CharField(max_length=32, default="system")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "rule_set_version"
        unique_together = (("merchant", "version"),)


class TierSetVersion(Model):
    """An immutable tier ladder (codes, ranks, criteria, benefits)."""

    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    version = fields.IntField()
    tiers: Any = fields.JSONField()
    created_by = fields.CharField(max_length=32, default="system")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "tier_set_version"
        unique_together = (("merchant", "version"),)


class MemberTier(Model):
    """A member's current tier (one row per member, locked when it changes)."""

    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.OneToOneRelation[Member] = fields.OneToOneField(
        "models.Member", related_name="tier", on_delete=fields.RESTRICT
    )
    member_id: int
    tier_code = fields.CharField(max_length=32)
    since = fields.DatetimeField()
    last_review_on = fields.DateField(null=True)

    class Meta:
        table = "member_tier"
        indexes = (("merchant_id", "tier_code"),)  # the back office's tier filter


class TierChange(Model):
    """Tier history, append-only."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="tier_changes", on_delete=fields.RESTRICT
    )
    member_id: int
    from_code = fields.CharField(max_length=32)
    to_code = fields.CharField(max_length=32)
    reason = fields.CharField(max_length=32)  # upgrade, downgrade, purchase_upgrade, manual
    idempotency_key = fields.CharField(max_length=128)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "tier_change"
        unique_together = (("merchant", "idempotency_key"),)
        indexes = (("member_id", "created_at"),)


class AuditLog(Model):
    """Who changed what: manual grants, configuration changes, refunds."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    actor = fields.CharField(max_length=32)
    action = fields.CharField(max_length=64)
    subject = fields.CharField(max_length=64, default="")
    detail: Any = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "audit_log"
        indexes = (("merchant_id", "created_at"),)
