"""Analytics (after 0021_analytics): indexes the benchmark on 1,000,000 members called for.

- Covering indexes on the daily rollups (`sales_day`, `sales_day_category`, `sales_day_product`,
  `member_day`): their day ranges become index-only scans.
- `member_store_churn` (merchant, store, last visit else registration): one store's churn list.
- `member_erased` (partial: erased members only): the consumption-cycle warning leaves them out by id.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

INDEXES = r"""
CREATE INDEX IF NOT EXISTS sales_day_cover ON sales_day (merchant_id, day)
    INCLUDE (store_id, staff_id, purchases, amount_fen, discount_fen, paid_fen);
CREATE INDEX IF NOT EXISTS sales_day_category_cover ON sales_day_category (merchant_id, day)
    INCLUDE (store_id, category, qty, revenue_fen, cost_fen, costed_revenue_fen);
CREATE INDEX IF NOT EXISTS sales_day_product_cover ON sales_day_product (merchant_id, day)
    INCLUDE (store_id, sku, qty, revenue_fen, cost_fen, costed_revenue_fen);
CREATE INDEX IF NOT EXISTS member_day_cover ON member_day (merchant_id, day)
    INCLUDE (store_id, source, staff_id, members);
CREATE INDEX IF NOT EXISTS member_store_churn
    ON member (merchant_id, store_id, (COALESCE(last_visit_at, registered_at)));
CREATE INDEX IF NOT EXISTS member_erased ON member (merchant_id) WHERE anonymized_at IS NOT NULL;
"""

DROP = r"""
DROP INDEX IF EXISTS member_erased;
DROP INDEX IF EXISTS member_store_churn;
DROP INDEX IF EXISTS member_day_cover;
DROP INDEX IF EXISTS sales_day_product_cover;
DROP INDEX IF EXISTS sales_day_category_cover;
DROP INDEX IF EXISTS sales_day_cover;
"""


async def create(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(INDEXES)  # type: ignore[attr-defined]


async def drop(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(DROP)  # type: ignore[attr-defined]


class Migration(migrations.Migration):
    dependencies = [("models", "0022_campaigns")]

    initial = False

    operations = [ops.RunPython(create, drop)]
