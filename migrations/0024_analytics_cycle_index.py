"""Analytics (after 0023_analytics_indexes): `member_stats_cycle`, the consumption-cycle warning's
recent buyers with every column it reads, so its count and top rows are an index-only scan."""

from tortoise import migrations
from tortoise.migrations import operations as ops

INDEXES = r"""
CREATE INDEX IF NOT EXISTS member_stats_cycle ON member_stats (merchant_id, last_at)
    INCLUDE (due_at, purchases, median_days, spend_fen, store_id, member_id) WHERE due_at IS NOT NULL;
"""

DROP = "DROP INDEX IF EXISTS member_stats_cycle;"


async def create(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(INDEXES)  # type: ignore[attr-defined]


async def drop(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(DROP)  # type: ignore[attr-defined]


class Migration(migrations.Migration):
    dependencies = [("models", "0023_analytics_indexes")]

    initial = False

    operations = [ops.RunPython(create, drop)]
