"""Count cards (计次卡: N uses of a service) and time cards (unlimited use between dates)."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.member import Member
    from models.merchant import Merchant, Store
    from models.staff import Staff


class CardKind(StrEnum):
    COUNT = "count"
    TIME = "time"


class CardProduct(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    kind = fields.CharEnumField(CardKind, max_length=8)
    name = fields.CharField(max_length=64)
    service = fields.CharField(max_length=64)  # what a use is, e.g. 洗剪吹
    uses = fields.IntField(null=True)  # count cards
    valid_days = fields.IntField()  # from purchase or grant
    price_fen = fields.IntField(default=0)
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "card_product"


class MemberCard(Model):
    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="service_cards", on_delete=fields.RESTRICT
    )
    member_id: int
    product: fields.ForeignKeyRelation[CardProduct] = fields.ForeignKeyField(
        "models.CardProduct", related_name="cards", on_delete=fields.RESTRICT
    )
    product_id: int
    kind = fields.CharEnumField(CardKind, max_length=8)
    uses_total = fields.IntField(null=True)
    uses_left = fields.IntField(null=True)
    valid_from = fields.DatetimeField()
    valid_until = fields.DatetimeField()
    source = fields.CharField(max_length=16)  # sold, granted
    issue_key = fields.CharField(max_length=128)
    price_fen = fields.IntField(default=0)
    revoked_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "member_card"
        unique_together = (("merchant", "issue_key"),)
        indexes = (("member_id", "valid_until"),)


class CardUse(Model):
    """Append-only: one row per use (unique key), by whom and where."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    card: fields.ForeignKeyRelation[MemberCard] = fields.ForeignKeyField(
        "models.MemberCard", related_name="uses", on_delete=fields.RESTRICT
    )
    card_id: int
    uses_left_after = fields.IntField(null=True)
    idempotency_key = fields.CharField(max_length=128)
    staff: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", null=True, on_delete=fields.RESTRICT
    )
    staff_id: int | None
    store: fields.ForeignKeyNullableRelation[Store] = fields.ForeignKeyField(
        "models.Store", null=True, on_delete=fields.RESTRICT
    )
    store_id: int | None
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "card_use"
        unique_together = (("merchant", "idempotency_key"),)
