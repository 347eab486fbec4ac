from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.migrations.constraints import UniqueConstraint

class Migration(migrations.Migration):
    dependencies = [('models', '0007_purchase_pool_code')]

    initial = False

    operations = [
        # Before the key: where one unionid already has several members of a merchant, the oldest keeps
        # it; the others keep their points and history but are no longer linked by unionid.
        ops.RunSQL(
            "UPDATE member SET unionid = NULL WHERE unionid IS NOT NULL AND id <> "
            "(SELECT MIN(m.id) FROM member m WHERE m.merchant_id = member.merchant_id AND m.unionid = member.unionid)",
            reverse_sql="",
        ),
        ops.RemoveIndex(
            model_name='Member',
            name=None,
            fields=['merchant_id', 'unionid'],
        ),
        ops.AddConstraint(
            model_name='Member',
            constraint=UniqueConstraint(fields=('merchant', 'unionid'), name=None),
        ),
    ]
