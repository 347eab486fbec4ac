"""The merchant's Official Account menu: validated against WeChat's limits and the keys the chat bot
answers (`handlers.rules.menu`), pushed with `menu/create`, then recorded with who pushed it and when.

Nothing is recorded unless WeChat accepted the menu; a refusal changes nothing here. Pushes for one
merchant take turns (a transaction-scoped advisory lock held across the call), so the record is always
the menu WeChat received last.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from handlers.core import audit_log, queries
from handlers.core.errors import ValidationError
from handlers.rules.errors import RuleError
from handlers.rules.menu import DEFAULT_MENU, validate_menu
from handlers.wechat.client import WeChatClient, oa_credentials
from models.menu import WeChatMenu
from models.merchant import Merchant


@dataclass(frozen=True, slots=True)
class PushedMenu:
    definition: dict[str, Any]
    is_default: bool
    pushed_at: datetime
    pushed_by: str


def checked(raw: object | None, click_keys: Collection[str]) -> dict[str, Any]:
    """The definition to send (None: the default menu), or a `ValidationError` naming the field."""
    try:
        return validate_menu(DEFAULT_MENU if raw is None else raw, click_keys)
    except RuleError as exc:
        raise ValidationError(f"{exc.field}: {exc.message}", field=exc.field) from None


_TURN_SQL = "SELECT pg_advisory_xact_lock(hashtext('wechat_menu'), :merchant)"
_RECORD_SQL = """
INSERT INTO wechat_menu (merchant_id, definition, is_default, pushed_at, pushed_by)
VALUES (:merchant, :definition, :is_default, :now, :actor)
ON CONFLICT (merchant_id) DO UPDATE
   SET definition = EXCLUDED.definition, is_default = EXCLUDED.is_default, pushed_at = EXCLUDED.pushed_at,
       pushed_by = EXCLUDED.pushed_by
"""


async def push_menu(
    merchant: Merchant,
    wechat: WeChatClient,
    raw: object | None,
    *,
    click_keys: Collection[str],
    actor: str,
    now: datetime,
) -> PushedMenu:
    """Validate `raw` (None: the default menu), push it to the merchant's Official Account and record it."""
    definition = checked(raw, click_keys)
    app = oa_credentials(merchant)
    pushed = PushedMenu(definition, is_default=raw is None, pushed_at=now, pushed_by=actor[:32])
    async with in_transaction():
        await queries.fetch_rows(_TURN_SQL, merchant=merchant.id)
        await wechat.create_menu(app, definition)
        await queries.fetch_rows(
            _RECORD_SQL,
            merchant=merchant.id,
            definition=json.dumps(definition, ensure_ascii=False),
            is_default=pushed.is_default,
            now=now,
            actor=pushed.pushed_by,
        )
        await audit_log.record(
            merchant.id, actor, "wechat_menu.push", "menu", menu=definition, default=pushed.is_default
        )
    return pushed


async def last_pushed(merchant: Merchant) -> PushedMenu | None:
    """What memberbot last pushed for the merchant, or None if it never did."""
    row = await WeChatMenu.get_or_none(merchant_id=merchant.id)
    if row is None:
        return None
    return PushedMenu(row.definition, row.is_default, row.pushed_at, row.pushed_by)
