"""Daily check-ins (签到) and make-ups (补签): one row per member and merchant-local day."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.member import Member
    from models.merchant import Merchant


class Checkin(Model):
    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="checkins", on_delete=fields.RESTRICT
    )
    member_id: int
    day = fields.DateField()
    makeup = fields.BooleanField(default=False)
    streak = fields.IntField()
    points = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "checkin"
        unique_together = (("member", "day"),)
