"""Admin JSON API: the Official Account menu — push a definition (or the default) and see the last push."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from handlers import menu
from handlers.core.errors import ErrorCode
from handlers.rules.menu import DEFAULT_MENU
from handlers.wechat.errors import WeChatNotConfigured
from webhooks.api import ApiError, Call, In, Out, Routes
from webhooks.appkeys import DISPATCHER, WECHAT
from webhooks.auth import ADMIN, MANAGER

routes = Routes("menu")


class ActionIn(In):
    """What a button that acts has: `type` and the fields it needs (checked against WeChat's limits)."""

    name: str = Field(description="UTF-8 bytes: at most 16 top-level, 40 in a sub-menu")
    type: str | None = Field(
        default=None,
        description="click, view, miniprogram, scancode_push, scancode_waitmsg, pic_sysphoto, "
        "pic_photo_or_album, pic_weixin, location_select, media_id, view_limited, article_id, "
        "article_view_limited",
    )
    key: str | None = Field(default=None, description="click: one of the bot's keys (GET lists them)")
    url: str | None = Field(default=None, description="view, miniprogram: absolute https, ≤ 1024 bytes")
    appid: str | None = None
    pagepath: str | None = None
    media_id: str | None = None
    article_id: str | None = None


class SubButtonIn(ActionIn):
    sub_button: list[Any] | None = Field(default=None, description="empty (as menu/get answers) or absent")


class ButtonIn(ActionIn):
    """A top-level button: an action, or a group of 1–5 `sub_button`s with no type."""

    sub_button: list[SubButtonIn] | None = None


class MenuIn(In):
    """`{"button": [...]}` with 1–3 buttons; an empty body (or `{}`) pushes the default menu."""

    button: list[ButtonIn] | None = None


class MenuOut(Out):
    menu: dict[str, Any] | None = Field(description="what memberbot last pushed, or null if it never did")
    is_default: bool = Field(description="the last push was the built-in default menu")
    pushed_at: datetime | None
    pushed_by: str | None = Field(description="`staff:<id>` or `cli`")
    click_keys: list[str] = Field(description="the keys the chat bot answers (for click buttons)")
    default_menu: dict[str, Any] = Field(description="the built-in default menu")


def _out(call: Call[Any, None], pushed: menu.PushedMenu | None) -> MenuOut:
    return MenuOut(
        menu=pushed.definition if pushed else None,
        is_default=pushed.is_default if pushed else False,
        pushed_at=pushed.pushed_at if pushed else None,
        pushed_by=pushed.pushed_by if pushed else None,
        click_keys=sorted(call.request.app[DISPATCHER].menu_keys),
        default_menu=DEFAULT_MENU,
    )


@routes.get("/api/admin/wechat/menu", response=MenuOut, auth=MANAGER)
async def show_menu(call: Call[None, None]) -> MenuOut:
    """The menu memberbot last pushed to the Official Account, when and by whom."""
    return _out(call, await menu.last_pushed(call.merchant))


@routes.put(
    "/api/admin/wechat/menu",
    body=MenuIn,
    body_required=False,
    response=MenuOut,
    auth=ADMIN,
    errors=(400, 409, 502),
)
async def push_menu(call: Call[MenuIn, None]) -> MenuOut:
    """Set the Official Account menu (`menu/create`): checked against WeChat's limits and the bot's
    keys first (400 naming the field, nothing sent); no Official Account configured: 409; WeChat
    unavailable or refusing the account's credentials: 502."""
    raw = None if call.body.button is None else call.body.model_dump(exclude_none=True)
    try:
        pushed = await menu.push_menu(
            call.merchant,
            call.request.app[WECHAT],
            raw,
            click_keys=call.request.app[DISPATCHER].menu_keys,
            actor=f"staff:{call.staff.id}",
            now=datetime.now(UTC),
        )
    except WeChatNotConfigured:  # nothing WeChat could fix: the merchant's own set-up (as staff codes)
        raise ApiError(
            409,
            ErrorCode.CONFLICT,
            "本店未配置公众号（oa_appid 与 oa_secret），无法设置菜单",
            field="oa_appid",
        ) from None
    return _out(call, pushed)
