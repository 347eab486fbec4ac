"""The merchant's product catalogue: what the till sells, by SKU, with its category, price and cost."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.merchant import Merchant


class Product(Model):
    """One SKU of one merchant. A purchase copies what it needs (category, price, cost) into its own
    items, so editing or deleting a product never changes a recorded purchase."""

    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", related_name="products", on_delete=fields.RESTRICT
    )
    merchant_id: int
    sku = fields.CharField(max_length=64)
    name = fields.CharField(max_length=128)
    category = fields.CharField(max_length=64, default="")
    price_fen = fields.BigIntField()
    cost_fen = fields.BigIntField(null=True)  # NULL: cost unknown (profit cannot be computed)
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "product"
        unique_together = (("merchant", "sku"),)
        indexes = (("merchant_id", "category"),)
