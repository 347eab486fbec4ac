from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.notice import DeliveryStatus
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class AddColumn(ops.AddField):
    """AddField whose column gets a database default, so the merchants that exist already get it too."""

    def __init__(self, model_name: str, name: str, field: Any, sql: str) -> None:
        super().__init__(model_name, name, field)
        self.sql = sql

    async def database_forward(self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None) -> None:
        if state_editor:
            await state_editor.client.execute_script(self.sql)


class Migration(migrations.Migration):
    dependencies = [('models', '0011_tasks')]

    initial = False

    operations = [
        ops.CreateModel(
            name='NoticeDelivery',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('member', fields.ForeignKeyField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='notices', on_delete=OnDelete.RESTRICT)),
                ('kind', fields.CharField(max_length=32)),
                ('event_key', fields.CharField(max_length=128)),
                ('context', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharEnumField(default=DeliveryStatus.QUEUED, description='QUEUED: queued\nDEFERRED: deferred\nSENDING: sending\nSENT: sent\nFAILED: failed\nSKIPPED: skipped', enum_type=DeliveryStatus, max_length=12)),
                ('channel', fields.CharField(null=True, max_length=12)),
                ('reason', fields.CharField(default='', max_length=255)),
                ('errcode', fields.IntField(null=True)),
                ('msgid', fields.CharField(null=True, max_length=32)),
                ('job_status', fields.CharField(default='', max_length=64)),
                ('text', fields.TextField(default='', unique=False)),
                ('run_after', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'notice_delivery', 'app': 'models', 'unique_together': (('merchant', 'kind', 'member', 'event_key'),), 'indexes': [Index(fields=['member_id', 'created_at']), Index(fields=['merchant_id', 'kind', 'status']), Index(fields=['merchant_id', 'msgid'])], 'pk_attr': 'id', 'table_description': 'One notice to one member about one event: `(merchant, kind, member, event_key)` is unique, so an'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='NoticeSetting',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('kind', fields.CharField(max_length=32)),
                ('settings', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('updated_by', fields.CharField(default='', max_length=32)),
            ],
            options={'table': 'notice_setting', 'app': 'models', 'unique_together': (('merchant', 'kind'),), 'pk_attr': 'id', 'table_description': "A merchant's choices for one notice kind; kinds without a row use the built-in defaults."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SubscribeGrant',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('member', fields.ForeignKeyField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='subscribe_grants', on_delete=OnDelete.RESTRICT)),
                ('template_id', fields.CharField(max_length=64)),
                ('accepted', fields.IntField(default=0)),
                ('used', fields.IntField(default=0)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'subscribe_grant', 'app': 'models', 'unique_together': (('member', 'template_id'),), 'pk_attr': 'id', 'table_description': 'One-time subscribe grants a member gave for one mini-program template: each accept allows one'},
            bases=['Model'],
        ),
        AddColumn(
            'Merchant', 'invite_qr_permanent', fields.BooleanField(default=False),
            "ALTER TABLE merchant ADD COLUMN invite_qr_permanent BOOLEAN NOT NULL DEFAULT FALSE",
        ),
        AddColumn(
            'Merchant', 'quiet_end_minute', fields.SmallIntField(default=480),
            "ALTER TABLE merchant ADD COLUMN quiet_end_minute SMALLINT NOT NULL DEFAULT 480",
        ),
        AddColumn(
            'Merchant', 'quiet_start_minute', fields.SmallIntField(default=1320),
            "ALTER TABLE merchant ADD COLUMN quiet_start_minute SMALLINT NOT NULL DEFAULT 1320",
        ),
    ]
