"""Stores and staff for the back office, and the product catalogue.

- `store.address`, `store.closed_at` (a closed store keeps its history and takes no new activity);
- `staff.session_epoch` (raised on deactivation and password reset; older sessions are refused);
- `product`: the merchant's catalogue, SKU unique per merchant;
- `mall_order.store_id` (the store that handed a pick-up over) and `wallet_transaction.store_id` (the
  store of a till top-up). The wallet ledger's one writer, `memberbot_wallet_post` (migration 0010),
  takes the store as a new last argument, defaulting to NULL.
"""

import importlib
from typing import Any

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class AddColumn(ops.AddField):
    """AddField whose column gets a database default, so the rows that exist already get it too."""

    def __init__(self, model_name: str, name: str, field: Any, sql: str) -> None:
        super().__init__(model_name, name, field)
        self.sql = sql

    async def database_forward(self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None) -> None:
        if state_editor:
            await state_editor.client.execute_script(self.sql)


WALLET_POST = r"""
DROP FUNCTION IF EXISTS memberbot_wallet_post(integer, text, bigint, bigint, text, text, text, text, bigint,
                                              timestamptz);
CREATE OR REPLACE FUNCTION memberbot_wallet_post(
    p_account integer, p_kind text, p_principal bigint, p_bonus bigint, p_key text, p_reference text,
    p_actor text, p_reason text, p_reverses bigint, p_created_at timestamptz, p_store integer DEFAULT NULL
) RETURNS SETOF wallet_transaction LANGUAGE plpgsql AS $$
DECLARE
    v_account wallet_account;
    v_txn wallet_transaction;
BEGIN
    SELECT * INTO STRICT v_account FROM wallet_account WHERE id = p_account FOR UPDATE;
    IF v_account.principal_fen + p_principal < 0 OR v_account.bonus_fen + p_bonus < 0 THEN
        RAISE EXCEPTION 'stored-value posting % would take account % below zero', p_key, p_account
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO wallet_transaction (merchant_id, member_id, kind, principal_delta, bonus_delta,
                                    principal_after, bonus_after, idempotency_key, reference, actor,
                                    reason, reverses_id, created_at, store_id)
    VALUES (v_account.merchant_id, v_account.member_id, p_kind, p_principal, p_bonus,
            v_account.principal_fen + p_principal, v_account.bonus_fen + p_bonus, p_key,
            left(p_reference, 64), left(p_actor, 32), left(p_reason, 255), p_reverses, p_created_at,
            p_store)
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING * INTO v_txn;
    IF v_txn.id IS NULL THEN
        RETURN;
    END IF;
    UPDATE wallet_account
       SET principal_fen = principal_fen + p_principal,
           bonus_fen = bonus_fen + p_bonus,
           lifetime_top_up_fen = lifetime_top_up_fen + CASE WHEN p_kind = 'top_up' THEN p_principal ELSE 0 END,
           updated_at = clock_timestamp()
     WHERE id = p_account;
    RETURN NEXT v_txn;
END
$$;
"""

DROP_WALLET_POST = """
DROP FUNCTION IF EXISTS memberbot_wallet_post(integer, text, bigint, bigint, text, text, text, text, bigint,
                                              timestamptz, integer);
"""


async def replace_writer(apps: object, schema_editor: object) -> None:
    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(WALLET_POST)


async def restore_writer(apps: object, schema_editor: object) -> None:
    previous = importlib.import_module("migrations.0010_ledger_writers")
    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(DROP_WALLET_POST)
    await client.execute_script(previous.LEDGER_FUNCTIONS)


class Migration(migrations.Migration):
    dependencies = [('models', '0012_notices')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Product',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', related_name='products', on_delete=OnDelete.RESTRICT)),
                ('sku', fields.CharField(max_length=64)),
                ('name', fields.CharField(max_length=128)),
                ('category', fields.CharField(default='', max_length=64)),
                ('price_fen', fields.BigIntField()),
                ('cost_fen', fields.BigIntField(null=True)),
                ('active', fields.BooleanField(default=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'product', 'app': 'models', 'unique_together': (('merchant', 'sku'),), 'indexes': [Index(fields=['merchant_id', 'category'])], 'pk_attr': 'id', 'table_description': 'One SKU of one merchant. A purchase copies what it needs (category, price, cost) into its own'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='MallOrder',
            name='store',
            field=fields.ForeignKeyField('models.Store', source_field='store_id', null=True, db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT),
        ),
        AddColumn(
            'Staff', 'session_epoch', fields.IntField(default=0),
            "ALTER TABLE staff ADD COLUMN session_epoch INT NOT NULL DEFAULT 0",
        ),
        AddColumn(
            'Store', 'address', fields.CharField(default='', max_length=255),
            "ALTER TABLE store ADD COLUMN address VARCHAR(255) NOT NULL DEFAULT ''",
        ),
        ops.AddField(
            model_name='Store',
            name='closed_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='WalletTransaction',
            name='store',
            field=fields.ForeignKeyField('models.Store', source_field='store_id', null=True, db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT),
        ),
        ops.RunPython(replace_writer, restore_writer),
    ]
