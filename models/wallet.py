"""Stored value (储值): a member's prepaid balance, principal and bonus kept apart, and its ledger.

Invariant (checked by `memberbot audit stored-value`): account principal/bonus == Σ of the ledger's
principal/bonus deltas, and neither is ever negative. One writer posts to these tables: the
`memberbot_wallet_*` functions of migration 0010, called by `handlers.wallet.ledger`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.member import Member
    from models.merchant import Merchant, Store


class WalletKind(StrEnum):
    TOP_UP = "top_up"
    PAY = "pay"
    REFUND = "refund"  # a purchase paid from the balance was refunded: the payment comes back
    WITHDRAW = "withdraw"  # principal returned to the member in cash (bonus is not refundable)
    ADJUST = "adjust"
    MALL = "mall"  # a stored-value mall item
    OPENING = "opening"  # principal brought from the merchant's previous system (import)


class WalletAccount(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.OneToOneRelation[Member] = fields.OneToOneField(
        "models.Member", related_name="wallet", on_delete=fields.RESTRICT
    )
    member_id: int
    principal_fen = fields.BigIntField(default=0)
    bonus_fen = fields.BigIntField(default=0)
    lifetime_top_up_fen = fields.BigIntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "wallet_account"


class WalletTransaction(Model):
    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="wallet_transactions", on_delete=fields.RESTRICT
    )
    member_id: int
    kind = fields.CharEnumField(WalletKind, max_length=12)
    principal_delta = fields.BigIntField()
    bonus_delta = fields.BigIntField()
    principal_after = fields.BigIntField()
    bonus_after = fields.BigIntField()
    idempotency_key = fields.CharField(max_length=128)
    reference = fields.CharField(max_length=64, default="")
    actor = fields.CharField(max_length=32, default="system")
    reason = fields.CharField(max_length=255, default="")
    reverses: fields.ForeignKeyNullableRelation[WalletTransaction] = fields.ForeignKeyField(
        "models.WalletTransaction", null=True, related_name="reversals", on_delete=fields.RESTRICT
    )
    reverses_id: int | None
    # The store of a top-up at the till (the cashier's store); NULL for postings made elsewhere.
    store: fields.ForeignKeyNullableRelation[Store] = fields.ForeignKeyField(
        "models.Store", null=True, on_delete=fields.RESTRICT
    )
    store_id: int | None
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "wallet_transaction"
        unique_together = (("merchant", "idempotency_key"),)
        indexes = (("member_id", "created_at"), ("merchant_id", "kind", "created_at"))
