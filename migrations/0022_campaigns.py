"""Campaigns (issue 10 §3): the campaign, one recipient row per (campaign, member), mass-send jobs,
journeys, the merchant's marketing caps; the member's SMS consent (existing members: no consent)."""

from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.campaign import CampaignChannel, CampaignState, JourneyTrigger, RecipientStatus
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class AddColumn(ops.AddField):
    """AddField whose column gets a database default, so the members that exist already get it too."""

    def __init__(self, model_name: str, name: str, field: Any, sql: str) -> None:
        super().__init__(model_name, name, field)
        self.sql = sql

    async def database_forward(self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None) -> None:
        if state_editor:
            await state_editor.client.execute_script(self.sql)


class Migration(migrations.Migration):
    dependencies = [('models', '0021_analytics')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Campaign',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('name', fields.CharField(max_length=64)),
                ('channel', fields.CharEnumField(description='MASS: mass\nSUBSCRIBE: subscribe\nCUSTOM: custom\nSMS: sms', enum_type=CampaignChannel, max_length=12)),
                ('segment_id', fields.IntField(null=True)),
                ('content', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('template_id', fields.CharField(default='', max_length=64)),
                ('state', fields.CharEnumField(default=CampaignState.DRAFT, description='DRAFT: draft\nSCHEDULED: scheduled\nSENDING: sending\nPAUSED: paused\nDONE: done\nCANCELLED: cancelled', enum_type=CampaignState, max_length=12)),
                ('scheduled_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('throttle_per_second', fields.IntField(default=50)),
                ('holdout_pct', fields.SmallIntField(default=10)),
                ('attach_coupon_template_id', fields.IntField(null=True)),
                ('attach_points', fields.IntField(default=0)),
                ('conversion_days', fields.SmallIntField(default=7)),
                ('validated_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('planned', fields.BooleanField(default=False)),
                ('plan_cursor', fields.IntField(default=0)),
                ('resumes', fields.IntField(default=0)),
                ('started_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('journey_id', fields.IntField(null=True)),
                ('created_by', fields.CharField(default='', max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'campaign', 'app': 'models', 'indexes': [Index(fields=['merchant_id', 'state']), Index(fields=['state', 'scheduled_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CampaignRecipient',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('campaign', fields.ForeignKeyField('models.Campaign', source_field='campaign_id', db_constraint=True, to_field='id', related_name='recipients', on_delete=OnDelete.RESTRICT)),
                ('merchant_id', fields.IntField()),
                ('member', fields.ForeignKeyField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='campaign_deliveries', on_delete=OnDelete.RESTRICT)),
                ('channel', fields.CharEnumField(description='MASS: mass\nSUBSCRIBE: subscribe\nCUSTOM: custom\nSMS: sms', enum_type=CampaignChannel, max_length=12)),
                ('status', fields.CharEnumField(default=RecipientStatus.PENDING, description='PENDING: pending\nSENDING: sending\nSENT: sent\nFAILED: failed\nSKIPPED: skipped\nHOLDOUT: holdout', enum_type=RecipientStatus, max_length=12)),
                ('reason', fields.CharField(default='', max_length=64)),
                ('errcode', fields.IntField(null=True)),
                ('msgid', fields.CharField(null=True, max_length=64)),
                ('attempts', fields.SmallIntField(default=0)),
                ('claimed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'campaign_recipient', 'app': 'models', 'unique_together': (('campaign', 'member'),), 'indexes': [Index(fields=['member_id', 'claimed_at']), Index(fields=['campaign_id', 'status']), Index(fields=['merchant_id', 'msgid'])], 'pk_attr': 'id', 'table_description': "One member of one campaign's audience: `(campaign, member)` is unique, so nobody is messaged"},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Journey',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('name', fields.CharField(max_length=64)),
                ('trigger', fields.CharEnumField(description='ENTERS_SEGMENT: enters_segment\nDAYS_AFTER_REGISTRATION: days_after_registration\nDAYS_AFTER_FIRST_PURCHASE: days_after_first_purchase', enum_type=JourneyTrigger, max_length=32)),
                ('segment_id', fields.IntField(null=True)),
                ('days', fields.SmallIntField(default=0)),
                ('campaign', fields.ForeignKeyField('models.Campaign', source_field='campaign_id', db_constraint=True, to_field='id', related_name='journeys', on_delete=OnDelete.RESTRICT)),
                ('active', fields.BooleanField(default=False)),
                ('active_since', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'journey', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A trigger and the campaign (its content, channel, holdout, attachment) sent once per member.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MarketingCaps',
            fields=[
                ('merchant', fields.OneToOneField('models.Merchant', source_field='merchant_id', primary_key=True, db_index=True, db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('marketing_per_day', fields.SmallIntField(default=1)),
                ('sms_per_day', fields.SmallIntField(default=1)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'marketing_caps', 'app': 'models', 'pk_attr': 'merchant_id', 'table_description': "A merchant's marketing budgets per member (a merchant without a row has the defaults of"},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MassJob',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('campaign', fields.ForeignKeyField('models.Campaign', source_field='campaign_id', db_constraint=True, to_field='id', related_name='mass_jobs', on_delete=OnDelete.RESTRICT)),
                ('merchant_id', fields.IntField()),
                ('client_msg_id', fields.CharField(unique=True, max_length=64)),
                ('msg_id', fields.CharField(null=True, max_length=64)),
                ('recipients', fields.IntField(default=0)),
                ('status', fields.CharField(default='', max_length=64)),
                ('total_count', fields.IntField(null=True)),
                ('sent_count', fields.IntField(null=True)),
                ('error_count', fields.IntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'campaign_mass_job', 'app': 'models', 'indexes': [Index(fields=['merchant_id', 'msg_id'])], 'pk_attr': 'id', 'table_description': "One OA mass-send call (`mass/send` of ≤ 10,000 openids or `mass/sendall` to a tag) and WeChat's"},
            bases=['Model'],
        ),
        AddColumn(
            'Member', 'sms_consent', fields.BooleanField(default=False),
            "ALTER TABLE member ADD COLUMN sms_consent BOOLEAN NOT NULL DEFAULT FALSE",
        ),
    ]
