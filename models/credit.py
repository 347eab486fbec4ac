"""Credit (信用额度 / 赊账): a member's credit limit, what they owe, and its append-only ledger.

Invariant (checked by `memberbot audit credit`): account balance (owed) == Σ of the ledger's
`amount_fen`, 0 ≤ balance, every charge left the balance within the limit then in force, and the
account's limit is the last entry's `limit_after`. One writer posts to these tables: the
`memberbot_credit_*` functions of migration 0019, called by `handlers.credit.ledger` and by
`memberbot_till_purchase`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.member import Member
    from models.merchant import Merchant, Store
    from models.purchase import Purchase
    from models.staff import Staff


class CreditKind(StrEnum):
    CHARGE = "charge"  # a till purchase (part of it) put on credit: owed goes up, due after N days
    REPAY = "repay"  # the member paid back at the till: owed goes down
    LIMIT_CHANGE = "limit_change"  # a manager set the limit: owed unchanged
    REVERSAL = "reversal"  # a refunded purchase's charge taken back: owed goes down


class CreditAccount(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.OneToOneRelation[Member] = fields.OneToOneField(
        "models.Member", related_name="credit", on_delete=fields.RESTRICT
    )
    member_id: int
    limit_fen = fields.BigIntField(default=0)
    balance_fen = fields.BigIntField(default=0)  # owed; never above the limit when charged
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "credit_account"


class CreditEntry(Model):
    """One append-only row per change (a trigger refuses UPDATE and DELETE)."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="credit_entries", on_delete=fields.RESTRICT
    )
    member_id: int
    kind = fields.CharEnumField(CreditKind, max_length=12)
    amount_fen = fields.BigIntField()  # change of the owed balance: + charge, − repay / reversal, 0 limit
    balance_after = fields.BigIntField()
    limit_after = fields.BigIntField()
    purchase: fields.ForeignKeyNullableRelation[Purchase] = fields.ForeignKeyField(
        "models.Purchase", null=True, related_name="credit_entries", on_delete=fields.RESTRICT
    )
    purchase_id: int | None
    staff: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", null=True, related_name="credit_entries", on_delete=fields.RESTRICT
    )
    staff_id: int | None
    store: fields.ForeignKeyNullableRelation[Store] = fields.ForeignKeyField(
        "models.Store", null=True, on_delete=fields.RESTRICT
    )
    store_id: int | None
    idempotency_key = fields.CharField(max_length=128)
    due_at: datetime | None = fields.DatetimeField(null=True)  # charges: repay by then, else overdue
    reverses: fields.ForeignKeyNullableRelation[CreditEntry] = fields.ForeignKeyField(
        "models.CreditEntry", null=True, related_name="reversals", on_delete=fields.RESTRICT
    )
    reverses_id: int | None
    actor = fields.CharField(max_length=32, default="system")
    reason = fields.CharField(max_length=255, default="")
    created_at = fields.DatetimeField()

    class Meta:
        table = "credit_entry"
        unique_together = (("merchant", "idempotency_key"),)
        indexes = (("member_id", "id"), ("merchant_id", "kind", "due_at"))
