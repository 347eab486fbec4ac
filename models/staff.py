"""Store staff who scan members at the till, and the merchant's managers and admins."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.merchant import Merchant, Store


class StaffRole(StrEnum):
    CASHIER = "cashier"
    MANAGER = "manager"
    ADMIN = "admin"


class Staff(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", related_name="staff", on_delete=fields.RESTRICT
    )
    merchant_id: int
    store: fields.ForeignKeyNullableRelation[Store] = fields.ForeignKeyField(
        "models.Store", related_name="staff", null=True, on_delete=fields.SET_NULL
    )
    store_id: int | None
    username = fields.CharField(max_length=64)
    role = fields.CharEnumField(StaffRole, max_length=16)
    password_hash = fields.CharField(max_length=255)
    active = fields.BooleanField(default=True)
    failed_logins = fields.IntField(default=0)
    locked_until = fields.DatetimeField(null=True)
    # Raised when the account is deactivated or its password reset: a session issued under an older
    # epoch is refused even if it escaped the revocation (e.g. a login racing the reset).
    session_epoch = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "staff"
        unique_together = (("merchant", "username"),)
