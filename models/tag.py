"""Member tags (manual and rule-kept), their history, and saved segments (boolean expressions over tags
and member attributes)."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.member import Member
    from models.merchant import Merchant
    from models.staff import Staff


class TagKind(StrEnum):
    MANUAL = "manual"  # applied and removed by staff (one member, or a bulk file)
    AUTO = "auto"  # kept by its rule: recomputed nightly and on demand, never edited by hand


class TagChange(StrEnum):
    ADDED = "added"
    REMOVED = "removed"


class Tag(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    name = fields.CharField(max_length=32)
    kind = fields.CharEnumField(TagKind, max_length=8, default=TagKind.MANUAL)
    rule: Any = fields.JSONField(null=True)  # auto tags: the normalised rule (handlers.rules.tag_rules)
    rule_version = fields.IntField(default=0)  # bumped by every rule change
    # Not set by anything yet: a tag reaches WeChat through a segment's sync (a one-tag segment).
    wechat_tag_id = fields.IntField(null=True)
    recomputed_at = fields.DatetimeField(null=True)
    member_count = fields.IntField(default=0)  # as of the last change or recomputation
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "tag"
        unique_together = (("merchant", "name"),)


class MemberTag(Model):
    """A member holds a tag. `added_by` is the staff member who applied it; NULL: its rule did."""

    id = fields.BigIntField(primary_key=True)
    tag: fields.ForeignKeyRelation[Tag] = fields.ForeignKeyField(
        "models.Tag", related_name="members", on_delete=fields.CASCADE
    )
    tag_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="tags", on_delete=fields.RESTRICT
    )
    member_id: int
    added_at = fields.DatetimeField()
    added_by: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", null=True, related_name=False, on_delete=fields.SET_NULL
    )
    added_by_id: int | None

    class Meta:
        table = "member_tag"
        unique_together = (("tag", "member"),)  # also the (tag_id, member_id) index segments use
        indexes = (("member_id", "tag_id"),)


class MemberTagHistory(Model):
    """Append-only (a trigger refuses UPDATE and DELETE): a tag added to or removed from a member, when,
    and by whom — `staff_id`, or `rule_version` of the tag's rule (NULL staff)."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    tag_id = fields.IntField()  # kept after the tag is deleted: history outlives it
    tag_name = fields.CharField(max_length=32)
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name=False, on_delete=fields.RESTRICT
    )
    member_id: int
    change = fields.CharEnumField(TagChange, max_length=8)
    at = fields.DatetimeField()
    staff_id = fields.IntField(null=True)
    rule_version = fields.IntField(null=True)
    reason = fields.CharField(max_length=32, default="")  # manual, bulk, rule, tag_deleted

    class Meta:
        table = "member_tag_history"
        indexes = (("member_id", "id"), ("tag_id", "id"))


class Segment(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    name = fields.CharField(max_length=32)
    expression: Any = fields.JSONField()  # validated (handlers.segments.expression)
    wechat_tag_id = fields.IntField(null=True)
    sync_status = fields.CharField(max_length=12, default="")  # "", queued, running, done, failed
    sync_error = fields.CharField(max_length=255, default="")
    synced_at = fields.DatetimeField(null=True)
    synced_count = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "segment"
        unique_together = (("merchant", "name"),)
