from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0003_purchase_snapshots')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Purchase',
            name='refund_key',
            field=fields.CharField(null=True, max_length=128),
        ),
        ops.AddField(
            model_name='Purchase',
            name='refunded_by',
            field=fields.ForeignKeyField('models.Staff', source_field='refunded_by_id', null=True, db_constraint=True, to_field='id', related_name='refunds', on_delete=OnDelete.RESTRICT),
        ),
    ]
