from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0002_loyalty_core')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Purchase',
            name='period_spend_fen',
            field=fields.BigIntField(default=0),
        ),
        ops.AddField(
            model_name='Purchase',
            name='points_today_before',
            field=fields.IntField(default=0),
        ),
        ops.AddField(
            model_name='Purchase',
            name='tier_code',
            field=fields.CharField(default='', max_length=32),
        ),
    ]
