"""Member import: the job and its staged rows; a member's external id (unique per merchant) and import
digest; the `opening` kind of the points and stored-value ledgers (a member's balance brought from the
merchant's previous system)."""

from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.member_import import ImportStatus, RowStatus
from models.points import PointsKind
from models.wallet import WalletKind
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import UniqueConstraint

class Migration(migrations.Migration):
    dependencies = [('models', '0014_invite_codes')]

    initial = False

    operations = [
        ops.CreateModel(
            name='MemberImport',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('actor', fields.CharField(max_length=32)),
                ('filename', fields.CharField(max_length=255)),
                ('file_format', fields.CharField(max_length=8)),
                ('encoding', fields.CharField(default='', max_length=16)),
                ('dry_run', fields.BooleanField(default=False)),
                ('welcome_gifts', fields.BooleanField(default=False)),
                ('status', fields.CharEnumField(default=ImportStatus.QUEUED, description='QUEUED: queued\nRUNNING: running\nDONE: done', enum_type=ImportStatus, max_length=12)),
                ('total_rows', fields.IntField(default=0)),
                ('processed_rows', fields.IntField(default=0)),
                ('created', fields.IntField(default=0)),
                ('updated', fields.IntField(default=0)),
                ('unchanged', fields.IntField(default=0)),
                ('rejected', fields.IntField(default=0)),
                ('ignored_columns', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('started_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'member_import', 'app': 'models', 'indexes': [Index(fields=['merchant_id', 'created_at'])], 'pk_attr': 'id', 'table_description': 'One uploaded file: its options, progress and counts. A dry run applies nothing.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MemberImportRow',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('job', fields.ForeignKeyField('models.MemberImport', source_field='job_id', db_constraint=True, to_field='id', related_name='rows', on_delete=OnDelete.CASCADE)),
                ('row_no', fields.IntField()),
                ('external_id', fields.CharField(null=True, max_length=64)),
                ('phone', fields.CharField(null=True, max_length=16)),
                ('phone_masked', fields.CharField(default='', max_length=16)),
                ('phone_shared', fields.BooleanField(default=False)),
                ('name', fields.CharField(null=True, max_length=64)),
                ('birthday', fields.DateField(null=True)),
                ('gender', fields.CharField(null=True, max_length=16)),
                ('tier_code', fields.CharField(null=True, max_length=32)),
                ('points', fields.IntField(default=0)),
                ('points_expire_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('stored_value_fen', fields.BigIntField(default=0)),
                ('row_hash', fields.CharField(default='', max_length=32)),
                ('new_code', fields.CharField(default='', max_length=16)),
                ('status', fields.CharEnumField(default=RowStatus.PENDING, description='PENDING: pending\nCREATED: created\nUPDATED: updated\nUNCHANGED: unchanged\nREJECTED: rejected', enum_type=RowStatus, max_length=12)),
                ('phase', fields.SmallIntField(default=0)),
                ('field', fields.CharField(default='', max_length=32)),
                ('reason', fields.CharField(default='', max_length=255)),
                ('note', fields.CharField(default='', max_length=255)),
                ('member_id', fields.IntField(null=True)),
            ],
            options={'table': 'member_import_row', 'app': 'models', 'unique_together': (('job', 'row_no'),), 'pk_attr': 'id', 'table_description': 'One data row of the file, validated and staged; `status` says what applying it did (or would do).'},
            bases=['Model'],
        ),
        # Each batch rewrites its staged rows a few times: room on the page keeps those updates HOT.
        ops.RunSQL("ALTER TABLE member_import_row SET (fillfactor = 50)", reverse_sql=""),
        ops.AddField(
            model_name='Member',
            name='external_id',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='Member',
            name='import_hash',
            field=fields.CharField(null=True, max_length=32),
        ),
        ops.AddConstraint(
            model_name='Member',
            constraint=UniqueConstraint(fields=('merchant', 'external_id'), name=None),
        ),
        ops.AlterField(
            model_name='PointsTransaction',
            name='kind',
            field=fields.CharEnumField(description='EARN_PURCHASE: earn_purchase\nEARN_CHECKIN: earn_checkin\nEARN_REFERRAL: earn_referral\nEARN_REGISTRATION: earn_registration\nEARN_PROFILE: earn_profile\nEARN_PROMOTION: earn_promotion\nEARN_TIER_GIFT: earn_tier_gift\nGRANT: grant\nOPENING: opening\nSPEND_REDEMPTION: spend_redemption\nSPEND_OFFSET: spend_offset\nSPEND_UPGRADE: spend_upgrade\nSPEND_MAKEUP: spend_makeup\nEXPIRE: expire\nREVERSE: reverse\nADJUST: adjust', enum_type=PointsKind, max_length=24),
        ),
        ops.AlterField(
            model_name='WalletTransaction',
            name='kind',
            field=fields.CharEnumField(description='TOP_UP: top_up\nPAY: pay\nREFUND: refund\nWITHDRAW: withdraw\nADJUST: adjust\nMALL: mall\nOPENING: opening', enum_type=WalletKind, max_length=12),
        ),
    ]
