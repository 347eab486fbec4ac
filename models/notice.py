"""Member notices: a merchant's settings per kind, one delivery record per (event, member), and the
mini-program subscribe grants members give."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.member import Member
    from models.merchant import Merchant


class DeliveryStatus(StrEnum):
    QUEUED = "queued"  # waiting for its send task
    DEFERRED = "deferred"  # quiet hours: due at `run_after`
    SENDING = "sending"  # handed to WeChat; a crash here is never re-sent (at most once)
    SENT = "sent"  # WeChat accepted it (`msgid` for template messages)
    FAILED = "failed"  # WeChat refused it (`errcode`), or the outcome of a crashed send is unknown
    SKIPPED = "skipped"  # not sent, `reason` says why (no channel, switched off, unsubscribed…)


class NoticeSetting(Model):
    """A merchant's choices for one notice kind; kinds without a row use the built-in defaults."""

    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    kind = fields.CharField(max_length=32)
    settings: dict[str, Any] = fields.JSONField()
    updated_at = fields.DatetimeField(auto_now=True)
    updated_by = fields.CharField(max_length=32, default="")

    class Meta:
        table = "notice_setting"
        unique_together = (("merchant", "kind"),)


class NoticeDelivery(Model):
    """One notice to one member about one event: `(merchant, kind, member, event_key)` is unique, so an
    event is told at most once however often its cause or the send is retried."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="notices", on_delete=fields.RESTRICT
    )
    member_id: int
    kind = fields.CharField(max_length=32)
    event_key = fields.CharField(max_length=128)
    context: dict[str, Any] = fields.JSONField(default=dict)
    status = fields.CharEnumField(DeliveryStatus, max_length=12, default=DeliveryStatus.QUEUED)
    channel = fields.CharField(max_length=12, null=True)
    reason = fields.CharField(max_length=255, default="")
    errcode = fields.IntField(null=True)
    msgid = fields.CharField(max_length=32, null=True)
    job_status = fields.CharField(max_length=64, default="")  # TEMPLATESENDJOBFINISH's Status
    text = fields.TextField(default="")  # what the member was told, as rendered
    run_after = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    sent_at = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "notice_delivery"
        unique_together = (("merchant", "kind", "member", "event_key"),)
        indexes = (("member_id", "created_at"), ("merchant_id", "kind", "status"), ("merchant_id", "msgid"))


class SubscribeGrant(Model):
    """One-time subscribe grants a member gave for one mini-program template: each accept allows one
    send; `used` never passes `accepted`."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="subscribe_grants", on_delete=fields.RESTRICT
    )
    member_id: int
    template_id = fields.CharField(max_length=64)
    accepted = fields.IntField(default=0)
    used = fields.IntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "subscribe_grant"
        unique_together = (("member", "template_id"),)
