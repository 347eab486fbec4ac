from tortoise import migrations
from tortoise.migrations import operations as ops
from models.invite import InviteKind
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0013_stores_staff_products')]

    initial = False

    operations = [
        ops.CreateModel(
            name='InviteCode',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('kind', fields.CharEnumField(description='OA_QR: oa_qr\nWXACODE: wxacode', enum_type=InviteKind, max_length=8)),
                ('scene', fields.CharField(max_length=64)),
                ('appid', fields.CharField(max_length=64)),
                ('permanent', fields.BooleanField(default=False)),
                ('ticket', fields.CharField(default='', max_length=255)),
                ('url', fields.CharField(default='', max_length=255)),
                ('expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('image', fields.BinaryField(null=True)),
                ('media_id', fields.CharField(default='', max_length=128)),
                ('media_expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'invite_code', 'app': 'models', 'unique_together': (('merchant', 'kind', 'scene'),), 'indexes': [Index(fields=['appid', 'kind', 'permanent'])], 'pk_attr': 'id', 'table_description': "One code per (merchant, kind, scene): a member's (`ref_<code>`, `r=<code>`) or a staff member's"},
            bases=['Model'],
        ),
        ops.AddIndex(
            model_name='Member',
            index=Index(fields=['merchant_id', 'referrer_id']),
        ),
    ]
