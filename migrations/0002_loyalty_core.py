from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.purchase import PurchaseStatus
from models.points import LotStatus, PointsKind
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='AuditLog',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('actor', fields.CharField(max_length=32)),
                ('action', fields.CharField(max_length=64)),
                ('subject', fields.CharField(default='', max_length=64)),
                ('detail', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'audit_log', 'app': 'models', 'indexes': [Index(fields=['merchant_id', 'created_at'])], 'pk_attr': 'id', 'table_description': 'Who changed what: manual grants, configuration changes, refunds.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Checkin',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('member', fields.ForeignKeyField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='checkins', on_delete=OnDelete.RESTRICT)),
                ('day', fields.DateField()),
                ('makeup', fields.BooleanField(default=False)),
                ('streak', fields.IntField()),
                ('points', fields.IntField(default=0)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'checkin', 'app': 'models', 'unique_together': (('member', 'day'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LoyaltyProgram',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.OneToOneField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', related_name='loyalty_program', on_delete=OnDelete.RESTRICT)),
                ('settings', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'loyalty_program', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Per-merchant settings validated by handlers.loyalty_config before they are saved.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MemberTier',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('member', fields.OneToOneField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='tier', on_delete=OnDelete.RESTRICT)),
                ('tier_code', fields.CharField(max_length=32)),
                ('since', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('last_review_on', fields.DateField(null=True)),
            ],
            options={'table': 'member_tier', 'app': 'models', 'pk_attr': 'id', 'table_description': "A member's current tier (one row per member, locked when it changes)."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PointsAccount',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('member', fields.OneToOneField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='points_account', on_delete=OnDelete.RESTRICT)),
                ('balance', fields.IntField(default=0)),
                ('pending', fields.IntField(default=0)),
                ('lifetime_earned', fields.IntField(default=0)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'points_account', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PointsPool',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('code', fields.CharField(max_length=64)),
                ('budget', fields.IntField()),
                ('granted', fields.IntField(default=0)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'points_pool', 'app': 'models', 'unique_together': (('merchant', 'code'),), 'pk_attr': 'id', 'table_description': "A campaign's points budget. `granted` never exceeds `budget`, even under concurrency."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PointsTransaction',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('member', fields.ForeignKeyField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='points_transactions', on_delete=OnDelete.RESTRICT)),
                ('delta', fields.IntField()),
                ('kind', fields.CharEnumField(description='EARN_PURCHASE: earn_purchase\nEARN_CHECKIN: earn_checkin\nEARN_REFERRAL: earn_referral\nEARN_REGISTRATION: earn_registration\nEARN_PROFILE: earn_profile\nEARN_PROMOTION: earn_promotion\nEARN_TIER_GIFT: earn_tier_gift\nGRANT: grant\nSPEND_REDEMPTION: spend_redemption\nSPEND_OFFSET: spend_offset\nSPEND_UPGRADE: spend_upgrade\nSPEND_MAKEUP: spend_makeup\nEXPIRE: expire\nREVERSE: reverse\nADJUST: adjust', enum_type=PointsKind, max_length=24)),
                ('idempotency_key', fields.CharField(max_length=128)),
                ('reference', fields.CharField(default='', max_length=64)),
                ('balance_after', fields.IntField()),
                ('actor', fields.CharField(default='system', max_length=32)),
                ('reason', fields.CharField(default='', max_length=255)),
                ('reverses', fields.ForeignKeyField('models.PointsTransaction', source_field='reverses_id', null=True, db_constraint=True, to_field='id', related_name='reversals', on_delete=OnDelete.RESTRICT)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'points_transaction', 'app': 'models', 'unique_together': (('merchant', 'idempotency_key'),), 'indexes': [Index(fields=['member_id', 'created_at']), Index(fields=['merchant_id', 'kind', 'created_at'])], 'pk_attr': 'id', 'table_description': 'One append-only ledger row. Never updated, never deleted.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PointsLot',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('member', fields.ForeignKeyField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='points_lots', on_delete=OnDelete.RESTRICT)),
                ('source', fields.ForeignKeyField('models.PointsTransaction', source_field='source_id', null=True, db_constraint=True, to_field='id', related_name='lots', on_delete=OnDelete.RESTRICT)),
                ('source_key', fields.CharField(max_length=128)),
                ('amount', fields.IntField()),
                ('remaining', fields.IntField()),
                ('status', fields.CharEnumField(description='PENDING: pending\nAVAILABLE: available\nVOIDED: voided', enum_type=LotStatus, max_length=12)),
                ('earned_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('available_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'points_lot', 'app': 'models', 'unique_together': (('merchant', 'source_key'),), 'indexes': [Index(fields=['member_id', 'status', 'expires_at']), Index(fields=['status', 'expires_at']), Index(fields=['status', 'available_at'])], 'pk_attr': 'id', 'table_description': 'Points earned together, with one expiry. Spending draws from the soonest-expiring lots first.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PointsDraw',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('transaction', fields.ForeignKeyField('models.PointsTransaction', source_field='transaction_id', db_constraint=True, to_field='id', related_name='draws', on_delete=OnDelete.RESTRICT)),
                ('lot', fields.ForeignKeyField('models.PointsLot', source_field='lot_id', db_constraint=True, to_field='id', related_name='draws', on_delete=OnDelete.RESTRICT)),
                ('amount', fields.IntField()),
            ],
            options={'table': 'points_draw', 'app': 'models', 'pk_attr': 'id', 'table_description': 'How much one debit took from one lot (so a reversal can restore exactly those lots).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Purchase',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('member', fields.ForeignKeyField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='purchases', on_delete=OnDelete.RESTRICT)),
                ('store', fields.ForeignKeyField('models.Store', source_field='store_id', null=True, db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('staff', fields.ForeignKeyField('models.Staff', source_field='staff_id', null=True, db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('idempotency_key', fields.CharField(max_length=128)),
                ('request_digest', fields.CharField(max_length=64)),
                ('amount_fen', fields.BigIntField()),
                ('discount_fen', fields.BigIntField(default=0)),
                ('offset_points', fields.IntField(default=0)),
                ('offset_fen', fields.BigIntField(default=0)),
                ('paid_fen', fields.BigIntField()),
                ('points_earned', fields.IntField(default=0)),
                ('points_pending', fields.BooleanField(default=False)),
                ('rule_set_version', fields.IntField(null=True)),
                ('breakdown', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('items', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharEnumField(default=PurchaseStatus.COMPLETED, description='COMPLETED: completed\nREFUNDED: refunded', enum_type=PurchaseStatus, max_length=12)),
                ('refunded_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'purchase', 'app': 'models', 'unique_together': (('merchant', 'idempotency_key'),), 'indexes': [Index(fields=['merchant_id', 'created_at']), Index(fields=['member_id', 'created_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ReferralAward',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('referee', fields.ForeignKeyField('models.Member', source_field='referee_id', db_constraint=True, to_field='id', related_name='referral_awards_as_referee', on_delete=OnDelete.RESTRICT)),
                ('referrer', fields.ForeignKeyField('models.Member', source_field='referrer_id', db_constraint=True, to_field='id', related_name='referral_awards', on_delete=OnDelete.RESTRICT)),
                ('level', fields.IntField()),
                ('points', fields.IntField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'referral_award', 'app': 'models', 'unique_together': (('referee', 'level'),), 'indexes': [Index(fields=['merchant_id', 'referrer_id'])], 'pk_attr': 'id', 'table_description': 'One award per referee per level: the unique key makes it at-most-once.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='RuleSetVersion',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('version', fields.IntField()),
                ('rules', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_by', fields.CharField(default='system', max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'rule_set_version', 'app': 'models', 'unique_together': (('merchant', 'version'),), 'pk_attr': 'id', 'table_description': 'An immutable earn rule set. Each purchase records the version its points came from.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='TierChange',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('member', fields.ForeignKeyField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='tier_changes', on_delete=OnDelete.RESTRICT)),
                ('from_code', fields.CharField(max_length=32)),
                ('to_code', fields.CharField(max_length=32)),
                ('reason', fields.CharField(max_length=32)),
                ('idempotency_key', fields.CharField(max_length=128)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'tier_change', 'app': 'models', 'unique_together': (('merchant', 'idempotency_key'),), 'indexes': [Index(fields=['member_id', 'created_at'])], 'pk_attr': 'id', 'table_description': 'Tier history, append-only.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='TierSetVersion',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('version', fields.IntField()),
                ('tiers', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_by', fields.CharField(default='system', max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'tier_set_version', 'app': 'models', 'unique_together': (('merchant', 'version'),), 'pk_attr': 'id', 'table_description': 'An immutable tier ladder (codes, ranks, criteria, benefits).'},
            bases=['Model'],
        ),
    ]
