"""Analytics (after 0027_credit_rollup_summary): 0021's one-transaction `memberbot_analytics_rebuild`
first ends a batched rebuild (0026) under way for the merchant, so the batched rebuild's next step
starts afresh instead of adding its remaining batches to what the one-transaction rebuild built (and
the refresher, which waits while a batched rebuild is under way, goes on)."""

import importlib

from tortoise import migrations
from tortoise.migrations import operations as ops

_ANALYTICS = importlib.import_module("migrations.0021_analytics")
_LOCK = "    PERFORM pg_advisory_xact_lock(hashtext('memberbot_analytics_refresh'));\n"
_END_BATCHED = (
    "    UPDATE analytics_rebuild SET phase = 'done', reached = 0, finished_at = clock_timestamp()\n"
    "     WHERE merchant_id = p_merchant AND finished_at IS NULL;\n"
)


def _rebuild(guarded: bool) -> str:
    """0021's `memberbot_analytics_rebuild`, with the guard or as it was."""
    text = _ANALYTICS.APPLY
    start = text.index("CREATE OR REPLACE FUNCTION memberbot_analytics_rebuild(")
    body = text[start : text.index("$$;", start) + 3]
    assert body.count(_LOCK) == 1
    return (body.replace(_LOCK, _LOCK + _END_BATCHED) if guarded else body) + "\n"


FUNCTIONS = _rebuild(guarded=True)


async def create(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(FUNCTIONS)  # type: ignore[attr-defined]


async def drop(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(_rebuild(guarded=False))  # type: ignore[attr-defined]


class Migration(migrations.Migration):
    dependencies = [("models", "0027_credit_rollup_summary")]

    initial = False

    operations = [ops.RunPython(create, drop)]
