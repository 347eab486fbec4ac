"""Invite and acquisition codes made through WeChat, cached so each is asked of WeChat once."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.merchant import Merchant


class InviteKind(StrEnum):
    OA_QR = "oa_qr"  # an Official Account parametric QR code (qrcode/create ticket)
    WXACODE = "wxacode"  # a mini-program code (getwxacodeunlimit image)


class InviteCode(Model):
    """One code per (merchant, kind, scene): a member's (`ref_<code>`, `r=<code>`) or a staff member's
    (`staff_<id>`). A row made for another appid than the merchant's current one is stale."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    kind = fields.CharEnumField(InviteKind, max_length=8)
    scene = fields.CharField(max_length=64)
    appid = fields.CharField(max_length=64)
    permanent = fields.BooleanField(default=False)
    ticket = fields.CharField(max_length=255, default="")
    url = fields.CharField(max_length=255, default="")  # the QR code's content
    expires_at = fields.DatetimeField(null=True)  # None: never
    image = fields.BinaryField(null=True)  # a mini-program code's picture
    # The QR picture uploaded as temporary media (WeChat keeps it three days), for image messages.
    media_id = fields.CharField(max_length=128, default="")
    media_expires_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "invite_code"
        unique_together = (("merchant", "kind", "scene"),)
        indexes = (("appid", "kind", "permanent"),)
