"""Tags and segments: `tag` (manual or rule-kept), `member_tag` (unique (tag, member), also the index a
segment's tag test uses), `member_tag_history` (append-only: UPDATE and DELETE refused by a trigger) and
`segment` (a saved boolean expression over tags and member attributes, optionally synced to a WeChat tag);
`member_live_ids`, the merchant's not-erased members by id (segment counts and keyset batches)."""

from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.tag import TagChange, TagKind
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index


class Migration(migrations.Migration):
    dependencies = [("models", "0019_credit")]

    initial = False

    operations = [
        ops.CreateModel(
            name="MemberTagHistory",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("tag_id", fields.IntField()),
                ("tag_name", fields.CharField(max_length=32)),
                (
                    "member",
                    fields.ForeignKeyField(
                        "models.Member",
                        source_field="member_id",
                        db_constraint=True,
                        to_field="id",
                        related_name=False,
                        on_delete=OnDelete.RESTRICT,
                    ),
                ),
                (
                    "change",
                    fields.CharEnumField(
                        description="ADDED: added\nREMOVED: removed", enum_type=TagChange, max_length=8
                    ),
                ),
                ("at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("staff_id", fields.IntField(null=True)),
                ("rule_version", fields.IntField(null=True)),
                ("reason", fields.CharField(default="", max_length=32)),
            ],
            options={
                "table": "member_tag_history",
                "app": "models",
                "indexes": [Index(fields=["member_id", "id"]), Index(fields=["tag_id", "id"])],
                "pk_attr": "id",
                "table_description": "Append-only (a trigger refuses UPDATE and DELETE): a tag added to or removed from a member, when,",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Segment",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "merchant",
                    fields.ForeignKeyField(
                        "models.Merchant",
                        source_field="merchant_id",
                        db_constraint=True,
                        to_field="id",
                        on_delete=OnDelete.RESTRICT,
                    ),
                ),
                ("name", fields.CharField(max_length=32)),
                (
                    "expression",
                    fields.JSONField(encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads),
                ),
                ("wechat_tag_id", fields.IntField(null=True)),
                ("sync_status", fields.CharField(default="", max_length=12)),
                ("sync_error", fields.CharField(default="", max_length=255)),
                ("synced_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("synced_count", fields.IntField(default=0)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "segment",
                "app": "models",
                "unique_together": (("merchant", "name"),),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Tag",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "merchant",
                    fields.ForeignKeyField(
                        "models.Merchant",
                        source_field="merchant_id",
                        db_constraint=True,
                        to_field="id",
                        on_delete=OnDelete.RESTRICT,
                    ),
                ),
                ("name", fields.CharField(max_length=32)),
                (
                    "kind",
                    fields.CharEnumField(
                        default=TagKind.MANUAL,
                        description="MANUAL: manual\nAUTO: auto",
                        enum_type=TagKind,
                        max_length=8,
                    ),
                ),
                (
                    "rule",
                    fields.JSONField(
                        null=True, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("rule_version", fields.IntField(default=0)),
                ("wechat_tag_id", fields.IntField(null=True)),
                ("recomputed_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("member_count", fields.IntField(default=0)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "tag",
                "app": "models",
                "unique_together": (("merchant", "name"),),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="MemberTag",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "tag",
                    fields.ForeignKeyField(
                        "models.Tag",
                        source_field="tag_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="members",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "member",
                    fields.ForeignKeyField(
                        "models.Member",
                        source_field="member_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="tags",
                        on_delete=OnDelete.RESTRICT,
                    ),
                ),
                ("added_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                (
                    "added_by",
                    fields.ForeignKeyField(
                        "models.Staff",
                        source_field="added_by_id",
                        null=True,
                        db_constraint=True,
                        to_field="id",
                        related_name=False,
                        on_delete=OnDelete.SET_NULL,
                    ),
                ),
            ],
            options={
                "table": "member_tag",
                "app": "models",
                "unique_together": (("tag", "member"),),
                "indexes": [Index(fields=["member_id", "tag_id"])],
                "pk_attr": "id",
                "table_description": "A member holds a tag. `added_by` is the staff member who applied it; NULL: its rule did.",
            },
            bases=["Model"],
        ),
        ops.RunSQL(
            """
-- A segment's count and its keyset batches read the merchant's live members in id order: with this
-- index they merge with member_tag's (tag_id, member_id) index without touching either table's rows.
CREATE INDEX IF NOT EXISTS member_live_ids ON member (merchant_id, id) WHERE anonymized_at IS NULL;
DROP TRIGGER IF EXISTS member_tag_history_append_only ON member_tag_history;
CREATE TRIGGER member_tag_history_append_only BEFORE UPDATE OR DELETE ON member_tag_history
    FOR EACH ROW EXECUTE FUNCTION memberbot_append_only();
""",
            reverse_sql="DROP TRIGGER IF EXISTS member_tag_history_append_only ON member_tag_history;"
            " DROP INDEX IF EXISTS member_live_ids",
        ),
    ]
