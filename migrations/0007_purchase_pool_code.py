from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0006_mall_coupons_wallet_cards')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Purchase',
            name='pool_code',
            field=fields.CharField(null=True, max_length=64),
        ),
    ]
