"""Coupons: templates a merchant defines, coupons issued to members, and their append-only events."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.member import Member
    from models.merchant import Merchant
    from models.purchase import Purchase


class CouponKind(StrEnum):
    FIXED = "fixed"  # 满100减20: amount_off_fen with threshold_fen
    PERCENT = "percent"  # percent_off with an optional cap_fen
    GIFT = "gift"  # a gift item (gift_name), redeemed at the till with no amount off


class CouponTemplate(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    name = fields.CharField(max_length=64)
    kind = fields.CharEnumField(CouponKind, max_length=8)
    threshold_fen = fields.IntField(default=0)
    amount_off_fen = fields.IntField(default=0)
    percent_off = fields.IntField(default=0)  # 20 = 20% off (8折)
    cap_fen = fields.IntField(null=True)
    gift_name = fields.CharField(max_length=64, default="")
    # Validity: fixed dates, or N days from issue (end of that merchant-local day).
    valid_from = fields.DatetimeField(null=True)
    valid_until = fields.DatetimeField(null=True)
    valid_days = fields.IntField(null=True)
    total_stock = fields.IntField(null=True)  # None: unlimited
    issued = fields.IntField(default=0)
    limit_per_member = fields.IntField(null=True)
    store_codes: Any = fields.JSONField(null=True)  # None: every store
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "coupon_template"


class CouponStatus(StrEnum):
    ISSUED = "issued"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"


class Coupon(Model):
    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    template: fields.ForeignKeyRelation[CouponTemplate] = fields.ForeignKeyField(
        "models.CouponTemplate", related_name="coupons", on_delete=fields.RESTRICT
    )
    template_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="coupons", on_delete=fields.RESTRICT
    )
    member_id: int
    code = fields.CharField(max_length=16)
    status = fields.CharEnumField(CouponStatus, max_length=8, default=CouponStatus.ISSUED)
    source = fields.CharField(max_length=24)  # mall, tier_gift, new_member, manual, campaign, birthday
    issue_key = fields.CharField(max_length=128)  # idempotency of the issuance
    valid_from = fields.DatetimeField()
    valid_until = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    used_purchase: fields.ForeignKeyNullableRelation[Purchase] = fields.ForeignKeyField(
        "models.Purchase", null=True, related_name="coupons", on_delete=fields.RESTRICT
    )
    used_purchase_id: int | None
    discount_fen = fields.IntField(default=0)  # what it took off when used
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "coupon"
        unique_together = (("merchant", "code"), ("merchant", "issue_key"))
        indexes = (("member_id", "status", "valid_until"), ("status", "valid_until"))


class CouponEvent(Model):
    """Append-only: issued, used, restored, expired, revoked — who, when, why."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    coupon: fields.ForeignKeyRelation[Coupon] = fields.ForeignKeyField(
        "models.Coupon", related_name="events", on_delete=fields.RESTRICT
    )
    coupon_id: int
    kind = fields.CharField(max_length=16)
    actor = fields.CharField(max_length=32, default="system")
    reference = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "coupon_event"
