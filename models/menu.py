"""The Official Account menu memberbot last pushed for a merchant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.merchant import Merchant


class WeChatMenu(Model):
    """One row per merchant: the definition WeChat accepted last (`menu/create`), when and by whom.
    Each push is also in the audit log (`wechat_menu.push`)."""

    id = fields.IntField(primary_key=True)
    merchant: fields.OneToOneRelation[Merchant] = fields.OneToOneField(
        "models.Merchant", related_name="wechat_menu", on_delete=fields.RESTRICT
    )
    merchant_id: int
    definition: dict[str, Any] = fields.JSONField()
    is_default = fields.BooleanField(default=False)  # the built-in default menu was pushed
    pushed_at = fields.DatetimeField()
    pushed_by = fields.CharField(max_length=32)  # `staff:<id>` or `cli`

    class Meta:
        table = "wechat_menu"
