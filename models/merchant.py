"""A merchant (tenant), its stores, and its per-merchant reply template overrides."""

from __future__ import annotations

from datetime import time

from tortoise import fields
from tortoise.models import Model


class Merchant(Model):
    id = fields.IntField(primary_key=True)
    slug = fields.CharField(max_length=64, unique=True)
    name = fields.CharField(max_length=128)
    timezone = fields.CharField(max_length=64, default="Asia/Shanghai")
    # Official Account credentials (the callback uses token + AES key; the API client appid + secret).
    oa_appid = fields.CharField(max_length=64, default="")
    oa_secret = fields.CharField(max_length=128, default="")
    oa_token = fields.CharField(max_length=64, default="")
    oa_aes_key = fields.CharField(max_length=43, default="")
    # Mini-program credentials.
    mp_appid = fields.CharField(max_length=64, default="")
    mp_secret = fields.CharField(max_length=128, default="")
    # Retention: days after unfollowing before profile fields are erased (WeChat rule, see README).
    retention_grace_days = fields.IntField(default=30)
    # Member notices that are not urgent wait out these merchant-local hours, as minutes after midnight
    # (default 22:00–08:00; start == end: none).
    quiet_start_minute = fields.SmallIntField(default=22 * 60)
    quiet_end_minute = fields.SmallIntField(default=8 * 60)
    # Members' invite QR codes: permanent (QR_LIMIT_STR_SCENE, 100,000 per account) or 30-day ones.
    invite_qr_permanent = fields.BooleanField(default=False)
    # Credit (赊账): a charge not repaid within this many days is overdue (due date fixed when charged).
    credit_overdue_days = fields.IntField(default=30)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "merchant"

    def __str__(self) -> str:
        return self.slug

    @property
    def quiet_hours(self) -> tuple[time, time]:
        return _time(self.quiet_start_minute), _time(self.quiet_end_minute)


def _time(minute: int) -> time:
    return time(minute // 60, minute % 60)


class Store(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", related_name="stores", on_delete=fields.RESTRICT
    )
    merchant_id: int
    code = fields.CharField(max_length=32)  # fixed once created: promotions and coupons name stores by code
    name = fields.CharField(max_length=128)
    address = fields.CharField(max_length=255, default="")
    # A closed store keeps its history and takes no new activity: it has no active staff (closing is
    # refused while it has any) and is never the default store of staff without one.
    closed_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "store"
        unique_together = (("merchant", "code"),)


class ReplyTemplate(Model):
    """A merchant's override of one chat reply template (validated jinja2 source)."""

    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", related_name="reply_templates", on_delete=fields.CASCADE
    )
    merchant_id: int
    name = fields.CharField(max_length=64)
    source = fields.TextField()
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "reply_template"
        unique_together = (("merchant", "name"),)
