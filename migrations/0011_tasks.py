from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.task import TaskStatus
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0010_ledger_writers')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Task',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', null=True, db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('kind', fields.CharField(max_length=48)),
                ('key', fields.CharField(max_length=160)),
                ('payload', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharEnumField(default=TaskStatus.PENDING, description='PENDING: pending\nRUNNING: running\nDONE: done\nDEAD: dead', enum_type=TaskStatus, max_length=12)),
                ('attempts', fields.IntField(default=0)),
                ('run_after', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('lease_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.TextField(default='', unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('done_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'task', 'app': 'models', 'unique_together': (('kind', 'key'),), 'indexes': [Index(fields=['status', 'run_after'])], 'pk_attr': 'id', 'table_description': '`(kind, key)` is unique, so an effect is queued once however often its cause is retried.'},
            bases=['Model'],
        ),
        ops.AlterModelOptions(
            name='LoyaltyProgram',
            options={'table': 'loyalty_program', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Per-merchant settings validated by handlers.loyalty.config before they are saved.'},
        ),
    ]
