from tortoise import migrations
from tortoise.migrations import operations as ops
from models.member import Gender, MemberSource
from models.staff import StaffRole
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Merchant',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('slug', fields.CharField(unique=True, max_length=64)),
                ('name', fields.CharField(max_length=128)),
                ('timezone', fields.CharField(default='Asia/Shanghai', max_length=64)),
                ('oa_appid', fields.CharField(default='', max_length=64)),
                ('oa_secret', fields.CharField(default='', max_length=128)),
                ('oa_token', fields.CharField(default='', max_length=64)),
                ('oa_aes_key', fields.CharField(default='', max_length=43)),
                ('mp_appid', fields.CharField(default='', max_length=64)),
                ('mp_secret', fields.CharField(default='', max_length=128)),
                ('retention_grace_days', fields.IntField(default=30)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'merchant', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ReplyTemplate',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', related_name='reply_templates', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=64)),
                ('source', fields.TextField(unique=False)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'reply_template', 'app': 'models', 'unique_together': (('merchant', 'name'),), 'pk_attr': 'id', 'table_description': "A merchant's override of one chat reply template (validated jinja2 source)."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Store',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', related_name='stores', on_delete=OnDelete.RESTRICT)),
                ('code', fields.CharField(max_length=32)),
                ('name', fields.CharField(max_length=128)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'store', 'app': 'models', 'unique_together': (('merchant', 'code'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Staff',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', related_name='staff', on_delete=OnDelete.RESTRICT)),
                ('store', fields.ForeignKeyField('models.Store', source_field='store_id', null=True, db_constraint=True, to_field='id', related_name='staff', on_delete=OnDelete.SET_NULL)),
                ('username', fields.CharField(max_length=64)),
                ('role', fields.CharEnumField(description='CASHIER: cashier\nMANAGER: manager\nADMIN: admin', enum_type=StaffRole, max_length=16)),
                ('password_hash', fields.CharField(max_length=255)),
                ('active', fields.BooleanField(default=True)),
                ('failed_logins', fields.IntField(default=0)),
                ('locked_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'staff', 'app': 'models', 'unique_together': (('merchant', 'username'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Member',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', related_name='members', on_delete=OnDelete.RESTRICT)),
                ('code', fields.CharField(max_length=16)),
                ('openid', fields.CharField(null=True, max_length=64)),
                ('unionid', fields.CharField(null=True, max_length=64)),
                ('mp_openid', fields.CharField(null=True, max_length=64)),
                ('phone', fields.CharField(null=True, max_length=16)),
                ('name', fields.CharField(null=True, max_length=64)),
                ('gender', fields.CharEnumField(null=True, description='MALE: male\nFEMALE: female\nUNDISCLOSED: undisclosed', enum_type=Gender, max_length=16)),
                ('birthday', fields.DateField(null=True)),
                ('registered_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('profile_completed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('source', fields.CharEnumField(default=MemberSource.OA_SUBSCRIBE, description='OA_SUBSCRIBE: oa_subscribe\nOA_REFERRAL: oa_referral\nOA_STAFF: oa_staff\nMINI_PROGRAM: mini_program\nSTAFF: staff\nIMPORT: import', enum_type=MemberSource, max_length=16)),
                ('referrer', fields.ForeignKeyField('models.Member', source_field='referrer_id', null=True, db_constraint=True, to_field='id', related_name='referrals', on_delete=OnDelete.SET_NULL)),
                ('acquired_by', fields.ForeignKeyField('models.Staff', source_field='acquired_by_id', null=True, db_constraint=True, to_field='id', related_name='acquired_members', on_delete=OnDelete.SET_NULL)),
                ('openid_digest', fields.CharField(null=True, max_length=64)),
                ('subscribed', fields.BooleanField(default=False)),
                ('unsubscribed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('anonymized_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'member', 'app': 'models', 'unique_together': (('merchant', 'code'), ('merchant', 'openid'), ('merchant', 'mp_openid')), 'indexes': [Index(fields=['merchant_id', 'unionid']), Index(fields=['merchant_id', 'phone']), Index(fields=['merchant_id', 'openid_digest'])], 'pk_attr': 'id', 'table_description': 'Identity and profile. Ledger rows reference the member, so erasure anonymises and never deletes.'},
            bases=['Model'],
        ),
    ]
