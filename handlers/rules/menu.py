"""The Official Account menu (`menu/create`): WeChat's limits, checked before anything is sent.

A definition is `{"button": [...]}`: 1–3 top-level buttons, each either an action (a `type` and its
fields) or a group of 1–5 `sub_button`s without a type. Limits (WECHAT.md §12), counted in UTF-8 bytes:

- names: 16 bytes top-level (4 Chinese characters shown); 40 bytes for a sub-button. The older
  WeChat docs say 40, later ones and some accounts accept 60; the phone shows only about 8 Chinese
  characters (24 bytes) anyway, so 40 costs nothing visible and never meets a 40018 where 40 holds;
- `key` at most 128 bytes; `url` at most 1024 bytes, absolute and https (WeChat itself also takes
  http: memberbot does not send members to plain-text pages);
- a `click` key must be one the chat bot answers (`click_keys`, the router's menu keys): a tap on a
  key it does not know would only get the help text.

Every error is a `RuleError` whose field is the dotted path, e.g. `button.1.sub_button.0.name`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from handlers.rules.errors import RuleError

MAX_BUTTONS = 3
MAX_SUB_BUTTONS = 5
NAME_MAX_BYTES = 16
SUB_NAME_MAX_BYTES = 40
KEY_MAX_BYTES = 128
URL_MAX_BYTES = 1024
ID_MAX_BYTES = 256  # appid, pagepath, media_id, article_id: memberbot's bound (WeChat documents none)

# Each action type and the fields it needs.
KEY_TYPES = (
    "click",
    "scancode_push",
    "scancode_waitmsg",
    "pic_sysphoto",
    "pic_photo_or_album",
    "pic_weixin",
    "location_select",
)
TYPES: dict[str, tuple[str, ...]] = {
    **{kind: ("key",) for kind in KEY_TYPES},
    "view": ("url",),
    "miniprogram": ("appid", "pagepath", "url"),
    "media_id": ("media_id",),
    "view_limited": ("media_id",),
    "article_id": ("article_id",),
    "article_view_limited": ("article_id",),
}
ACTION_FIELDS = frozenset(field for needed in TYPES.values() for field in needed)

# The default menu: the bot's own keys (bot/dialog/), four entry points in WeChat's three places.
DEFAULT_MENU: dict[str, Any] = {
    "button": [
        {
            "name": "会员卡",
            "sub_button": [
                {"type": "click", "name": "会员卡", "key": "MENU_CARD"},
                {"type": "click", "name": "每日签到", "key": "MENU_CHECKIN"},
                {"type": "click", "name": "邀请好友", "key": "MENU_INVITE"},
                {"type": "click", "name": "完善资料", "key": "MENU_REGISTER"},
                {"type": "click", "name": "帮助", "key": "MENU_HELP"},
            ],
        },
        {"type": "click", "name": "积分商城", "key": "MENU_MALL"},
        {
            "name": "我的",
            "sub_button": [
                {"type": "click", "name": "我的积分", "key": "MENU_POINTS"},
                {"type": "click", "name": "优惠券", "key": "MENU_COUPONS"},
                {"type": "click", "name": "余额", "key": "MENU_BALANCE"},
                {"type": "click", "name": "我的订单", "key": "MENU_ORDERS"},
                {"type": "click", "name": "会员等级", "key": "MENU_TIER"},
            ],
        },
    ]
}


def validate_menu(raw: object, click_keys: Collection[str]) -> dict[str, Any]:
    """The definition as it is sent to WeChat (known fields only), or `RuleError` naming the field."""
    if not isinstance(raw, Mapping):
        raise RuleError("button", '菜单须为 JSON 对象 {"button": [...]}')
    _known(raw, {"button"}, "")
    buttons = raw.get("button")
    if not isinstance(buttons, list):
        raise RuleError("button", "缺少 button，须为按钮数组")
    if not 1 <= len(buttons) <= MAX_BUTTONS:
        raise RuleError("button", f"一级菜单须有 1–{MAX_BUTTONS} 个按钮，现有 {len(buttons)} 个")
    return {"button": [_top(item, f"button.{n}", click_keys) for n, item in enumerate(buttons)]}


def menu_keys(menu: Mapping[str, Any]) -> list[str]:
    """The `click` keys a validated menu sends, in menu order."""
    found: list[str] = []
    for button in menu["button"]:
        for item in button.get("sub_button") or [button]:
            if item.get("type") == "click":
                found.append(item["key"])
    return found


def _top(raw: object, path: str, click_keys: Collection[str]) -> dict[str, Any]:
    button = _object(raw, path)
    subs = button.get("sub_button")
    if subs is None or subs == []:
        _known(button, {"name", "type", "sub_button", *ACTION_FIELDS}, path)
        return _action(button, path, NAME_MAX_BYTES, click_keys)
    if not isinstance(subs, list):
        raise RuleError(f"{path}.sub_button", "须为按钮数组")
    _known(button, {"name", "sub_button"}, path, "含子菜单的按钮只能有 name 和 sub_button")
    if len(subs) > MAX_SUB_BUTTONS:
        raise RuleError(f"{path}.sub_button", f"子菜单最多 {MAX_SUB_BUTTONS} 个按钮，现有 {len(subs)} 个")
    name = _name(button, path, NAME_MAX_BYTES)
    sub_buttons = [_sub(item, f"{path}.sub_button.{n}", click_keys) for n, item in enumerate(subs)]
    return {"name": name, "sub_button": sub_buttons}


def _sub(raw: object, path: str, click_keys: Collection[str]) -> dict[str, Any]:
    button = _object(raw, path)
    if button.get("sub_button") not in (None, []):
        raise RuleError(f"{path}.sub_button", "菜单最多两级，子菜单下不能再有 sub_button")
    _known(button, {"name", "type", "sub_button", *ACTION_FIELDS}, path)
    return _action(button, path, SUB_NAME_MAX_BYTES, click_keys)


def _action(
    button: Mapping[str, Any], path: str, name_bytes: int, click_keys: Collection[str]
) -> dict[str, Any]:
    name = _name(button, path, name_bytes)
    kind = button.get("type")
    if kind is None:
        raise RuleError(f"{path}.type", "缺少 type（没有子菜单的按钮须指定类型）")
    if kind not in TYPES:
        raise RuleError(f"{path}.type", f"不支持的按钮类型 {kind!r}，可用：{'、'.join(TYPES)}")
    needed = TYPES[kind]
    extra = sorted(set(button) & ACTION_FIELDS - set(needed))
    if extra:
        raise RuleError(f"{path}.{extra[0]}", f"{kind} 类型的按钮不使用 {extra[0]}")
    out: dict[str, Any] = {"type": kind, "name": name}
    for field in needed:
        where = f"{path}.{field}"
        if field not in button:
            raise RuleError(where, f"{kind} 类型的按钮须有 {field}")
        if field == "key":
            out[field] = _key(button[field], where, check=kind == "click", click_keys=click_keys)
        elif field == "url":
            out[field] = _url(button[field], where)
        else:
            out[field] = _line(button[field], where, ID_MAX_BYTES)
    return out


def _object(raw: object, path: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise RuleError(path, "按钮须为 JSON 对象")
    return raw


def _known(raw: Mapping[str, Any], allowed: Collection[str], path: str, why: str = "") -> None:
    for key in raw:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise RuleError(where, why or f"不支持字段 {key}")


def _line(raw: object, path: str, max_bytes: int) -> str:
    """A non-empty single-line string of at most `max_bytes` UTF-8 bytes."""
    if not isinstance(raw, str) or not raw.strip():
        raise RuleError(path, "须为非空字符串")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise RuleError(path, "不能包含换行等控制字符")
    size = len(raw.encode())
    if size > max_bytes:
        raise RuleError(path, f"最多 {max_bytes} 字节（UTF-8，一个汉字 3 字节），现有 {size} 字节")
    return raw


def _name(button: Mapping[str, Any], path: str, max_bytes: int) -> str:
    if "name" not in button:
        raise RuleError(f"{path}.name", "缺少按钮名称 name")
    return _line(button["name"], f"{path}.name", max_bytes)


def _key(raw: object, path: str, *, check: bool, click_keys: Collection[str]) -> str:
    key = _line(raw, path, KEY_MAX_BYTES)
    if check and key not in click_keys:
        known = "、".join(sorted(click_keys)) or "（无）"
        raise RuleError(path, f"聊天机器人不认识菜单 key {key!r}，可用：{known}")
    return key


def _url(raw: object, path: str) -> str:
    url = _line(raw, path, URL_MAX_BYTES)
    if any(ch.isspace() for ch in url):
        raise RuleError(path, "网址不能包含空白字符")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = None
    if parts is None or parts.scheme != "https" or not parts.hostname:
        raise RuleError(path, "须为以 https:// 开头的完整网址")
    return url
