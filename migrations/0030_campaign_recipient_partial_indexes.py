"""Campaign recipients (after 0029_segment_facts): two of `campaign_recipient`'s indexes become partial.

Every recipient row is written three times while a campaign sends (planned, claimed, recorded), and no
write of it can be a HOT update (its status is indexed), so each write adds an entry to every index
whose condition the new row meets. Two indexes only ever serve rows that have the value they index:

- `campaign_recipient_claimed` (member, claimed_at) WHERE claimed_at IS NOT NULL: the governor's
  touches (messages claimed this day / month per member) always ask `claimed_at >= …`. A planned row
  (`pending`, not claimed yet) and a skipped one no longer get an entry.
- `campaign_recipient_msgid` (merchant, msgid) WHERE msgid IS NOT NULL: `MASSSENDJOBFINISH` looks a
  mass send's recipients up by its msg_id. Subscribe, customer-service and most SMS recipients have
  none. It also stops the planner from AND-ing the merchant's whole index into the touches query: with
  statistics that lag a fast-growing table, it did (171,838 index entries read to find 600 rows, 10 ms
  per claimed chunk, slower with every campaign the merchant sent).
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

INDEXES = r"""
CREATE INDEX IF NOT EXISTS campaign_recipient_claimed ON campaign_recipient (member_id, claimed_at)
    WHERE claimed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS campaign_recipient_msgid ON campaign_recipient (merchant_id, msgid)
    WHERE msgid IS NOT NULL;
"""

DROP = r"""
DROP INDEX IF EXISTS campaign_recipient_msgid;
DROP INDEX IF EXISTS campaign_recipient_claimed;
"""


async def create(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(INDEXES)  # type: ignore[attr-defined]


async def drop(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(DROP)  # type: ignore[attr-defined]


class Migration(migrations.Migration):
    dependencies = [("models", "0029_segment_facts")]

    initial = False

    operations = [
        ops.RemoveIndex(model_name="CampaignRecipient", fields=["member_id", "claimed_at"]),
        ops.RemoveIndex(model_name="CampaignRecipient", fields=["merchant_id", "msgid"]),
        ops.RunPython(create, drop),
    ]
