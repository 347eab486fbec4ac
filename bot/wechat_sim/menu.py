"""The emulated custom-menu endpoints, `cgi-bin/menu/create` and `cgi-bin/menu/get` (WECHAT.md §12).

WeChat's checks and errcodes: 40016 button count (1–3 top-level, 1–5 in a group), 40018 name size
(16 bytes top-level, 40 in a group), 40017 unknown or missing type, 40019 key size (1–128 bytes),
40055 / 40054 a (sub-)button's url (absolute http(s), at most 1024 bytes), 40007 a missing media id,
47001 any other missing field. Like WeChat, http URLs are accepted (memberbot itself sends https only).
The menu is kept per app (`SimState.menus`); `menu/get` answers 46003 while there is none, and gives
each action button an empty `sub_button` as WeChat does.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from bot.wechat_sim.state import SimError, SimState

Body = dict[str, Any]
Endpoint = Callable[[SimState, web.Request, Body, str], Awaitable[Body | web.Response]]
KEYED = {"click", "scancode_push", "scancode_waitmsg", "pic_sysphoto", "pic_photo_or_album", "pic_weixin"}
KEYED |= {"location_select"}
MEDIA = {"media_id", "view_limited"}
ARTICLES = {"article_id", "article_view_limited"}
URL_MAX = 1024


def _size(value: Any) -> int:
    return len(value.encode()) if isinstance(value, str) else 0


def _web_url(url: Any) -> bool:
    if not isinstance(url, str) or not 1 <= _size(url) <= URL_MAX or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _check_action(button: Body, *, sub: bool) -> None:
    kind = button.get("type")
    if kind in KEYED:
        if not 1 <= _size(button.get("key")) <= 128:
            raise SimError(40019, "invalid key size")
    elif kind in ("view", "miniprogram"):
        if not _web_url(button.get("url")):
            raise SimError(40054, "invalid sub button url domain") if sub else SimError(40055, "invalid url")
        if kind == "miniprogram" and not (_size(button.get("appid")) and _size(button.get("pagepath"))):
            raise SimError(47001, "data format error: appid and pagepath are required")
    elif kind in MEDIA:
        if not _size(button.get("media_id")):
            raise SimError(40007, "invalid media_id")
    elif kind in ARTICLES:
        if not _size(button.get("article_id")):
            raise SimError(47001, "data format error: article_id is required")
    else:
        raise SimError(40017, "invalid button type")


def _check_menu(body: Body) -> list[Body]:
    buttons = body.get("button")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        raise SimError(40016, "invalid button size")
    for button in buttons:
        if not isinstance(button, dict):
            raise SimError(47001, "data format error: button")
        if not 1 <= _size(button.get("name")) <= 16:
            raise SimError(40018, "invalid button name size")
        subs = button.get("sub_button")
        if not subs:
            _check_action(button, sub=False)
            continue
        if not isinstance(subs, list) or len(subs) > 5:
            raise SimError(40016, "invalid button size")
        for item in subs:
            if not isinstance(item, dict) or item.get("sub_button"):
                raise SimError(40016, "invalid button size")
            if not 1 <= _size(item.get("name")) <= 40:
                raise SimError(40018, "invalid button name size")
            _check_action(item, sub=True)
    return buttons


def _as_get(button: Body) -> Body:
    """A stored button as `menu/get` shows it: an action has `sub_button: []`."""
    shown = copy.deepcopy(button)
    subs = shown.get("sub_button") or []
    shown["sub_button"] = [_as_get(item) for item in subs]
    return shown


async def menu_create(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    buttons = _check_menu(body)
    state.menus[appid] = {"button": copy.deepcopy(buttons)}
    return {}


async def menu_get(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    menu = state.menus.get(appid)
    if menu is None:
        raise SimError(46003, "menu no exist")
    return {"menu": {"button": [_as_get(button) for button in menu["button"]]}}


MENU_ROUTES: dict[str, tuple[str, Endpoint, bool]] = {
    "cgi-bin/menu/create": ("POST", menu_create, True),
    "cgi-bin/menu/get": ("GET", menu_get, True),
}
