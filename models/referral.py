"""Referral awards: one per referee and level."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.member import Member
    from models.merchant import Merchant


class ReferralAward(Model):
    """One award per referee per level: the unique key makes it at-most-once."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    referee: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="referral_awards_as_referee", on_delete=fields.RESTRICT
    )
    referee_id: int
    referrer: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="referral_awards", on_delete=fields.RESTRICT
    )
    referrer_id: int
    level = fields.IntField()
    points = fields.IntField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "referral_award"
        unique_together = (("referee", "level"),)
        indexes = (("merchant_id", "referrer_id"),)
