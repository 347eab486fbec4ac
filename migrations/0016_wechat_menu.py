from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0015_member_import')]

    initial = False

    operations = [
        ops.CreateModel(
            name='WeChatMenu',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.OneToOneField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', related_name='wechat_menu', on_delete=OnDelete.RESTRICT)),
                ('definition', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('is_default', fields.BooleanField(default=False)),
                ('pushed_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('pushed_by', fields.CharField(max_length=32)),
            ],
            options={'table': 'wechat_menu', 'app': 'models', 'pk_attr': 'id', 'table_description': 'One row per merchant: the definition WeChat accepted last (`menu/create`), when and by whom.'},
            bases=['Model'],
        ),
    ]
