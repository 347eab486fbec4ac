"""The Official Account menu definition against WeChat's limits, before anything is sent."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.rules.errors import RuleError
from handlers.rules.menu import DEFAULT_MENU, TYPES, menu_keys, validate_menu

KEYS = frozenset({"MENU_CARD", "MENU_CHECKIN", "MENU_HELP"})
CLICK = {"type": "click", "name": "签到", "key": "MENU_CHECKIN"}
VIEW = {"type": "view", "name": "官网", "url": "https://shop.example.com/a?b=1"}
MINI = {
    "type": "miniprogram",
    "name": "小程序",
    "appid": "wx1234567890abcdef",
    "pagepath": "pages/index/index",
    "url": "https://shop.example.com/fallback",
}


def group(*subs: dict[str, Any], name: str = "更多") -> dict[str, Any]:
    return {"name": name, "sub_button": list(subs)}


def menu(*buttons: dict[str, Any]) -> dict[str, Any]:
    return {"button": list(buttons)}


def refused(raw: object, keys: frozenset[str] = KEYS) -> RuleError:
    with pytest.raises(RuleError) as caught:
        validate_menu(raw, keys)
    return caught.value


@pytest.mark.parametrize(
    "definition",
    [
        menu(CLICK),
        menu(CLICK, VIEW, MINI),
        menu(group(CLICK, VIEW, MINI, CLICK, CLICK)),
        menu({**CLICK, "sub_button": []}),  # what menu/get answers for a button without sub-buttons
        menu({"type": "scancode_push", "name": "扫码", "key": "ANY_KEY"}),  # only click keys are routed
        menu({"type": "media_id", "name": "图片", "media_id": "MEDIA_ID_1"}),
        menu({"type": "article_id", "name": "文章", "article_id": "ARTICLE_1"}),
        menu({**CLICK, "name": "四个汉字"}),  # 12 bytes
        menu({**CLICK, "name": "x" * 16}),
        menu(group({**CLICK, "name": "啊" * 13})),  # 39 bytes
        menu(group({**CLICK, "key": "MENU_CARD"}), CLICK, {**VIEW, "url": "https://a.cn/" + "p" * 1011}),
    ],
)
def test_valid_menus_are_sent_as_given(definition: dict[str, Any]) -> None:
    sent = validate_menu(definition, KEYS)
    expected = copy.deepcopy(definition)
    for button in expected["button"]:
        if button.get("sub_button") == []:
            del button["sub_button"]
    assert sent == expected


@pytest.mark.parametrize(
    ("definition", "field", "words"),
    [
        ([CLICK], "button", "JSON 对象"),
        ({}, "button", "缺少 button"),
        ({"button": CLICK}, "button", "按钮数组"),
        (menu(), "button", "1–3 个按钮，现有 0 个"),
        (menu(CLICK, CLICK, CLICK, CLICK), "button", "现有 4 个"),
        ({"button": [CLICK], "matchrule": {}}, "matchrule", "不支持字段"),
        (menu("签到"), "button.0", "JSON 对象"),
        (menu({**CLICK, "name": "六个汉字六个"}), "button.0.name", "现有 18 字节"),
        (menu({**CLICK, "name": "x" * 17}), "button.0.name", "现有 17 字节"),
        (menu(group({**CLICK, "name": "啊" * 14})), "button.0.sub_button.0.name", "最多 40 字节"),
        (menu(CLICK, group(CLICK, {**CLICK, "name": ""})), "button.1.sub_button.1.name", "非空"),
        (menu({**CLICK, "name": "  "}), "button.0.name", "非空"),
        (menu({**CLICK, "name": "签\n到"}), "button.0.name", "控制字符"),
        (menu({**CLICK, "name": 7}), "button.0.name", "字符串"),
        (menu({"type": "click", "key": "MENU_HELP"}), "button.0.name", "缺少按钮名称"),
        (menu(group(*[CLICK] * 6)), "button.0.sub_button", "最多 5 个按钮，现有 6 个"),
        (menu(group(CLICK, name="子" * 6)), "button.0.name", "最多 16 字节"),
        (menu({**group(CLICK), "type": "click"}), "button.0.type", "只能有 name 和 sub_button"),
        (menu({**group(CLICK), "key": "MENU_HELP"}), "button.0.key", "只能有 name 和 sub_button"),
        (menu({"name": "更多", "sub_button": CLICK}), "button.0.sub_button", "按钮数组"),
        (menu(group({**CLICK, "sub_button": [CLICK]})), "button.0.sub_button.0.sub_button", "两级"),
        (menu({"name": "签到", "key": "MENU_HELP"}), "button.0.type", "缺少 type"),
        (menu({**CLICK, "type": "text"}), "button.0.type", "不支持的按钮类型 'text'"),
        (menu({**CLICK, "colour": "red"}), "button.0.colour", "不支持字段 colour"),
        (menu({**CLICK, "url": "https://a.cn"}), "button.0.url", "click 类型的按钮不使用 url"),
        (menu({"type": "click", "name": "签到"}), "button.0.key", "须有 key"),
        (menu({**CLICK, "key": "MENU_UNKNOWN"}), "button.0.key", "不认识菜单 key 'MENU_UNKNOWN'"),
        (menu(group(CLICK, {**CLICK, "key": "k" * 129})), "button.0.sub_button.1.key", "最多 128 字节"),
        (menu({"type": "scancode_push", "name": "扫码", "key": "k" * 129}), "button.0.key", "128 字节"),
        (menu({**VIEW, "url": "http://a.cn/"}), "button.0.url", "https://"),
        (menu({**VIEW, "url": "/relative/page"}), "button.0.url", "https://"),
        (menu({**VIEW, "url": "https:///no-host"}), "button.0.url", "https://"),
        (menu({**VIEW, "url": "https://[::1/x"}), "button.0.url", "https://"),
        (menu({**VIEW, "url": "https://a.cn/a b"}), "button.0.url", "空白"),
        (menu({**VIEW, "url": "https://a.cn/" + "p" * 1012}), "button.0.url", "最多 1024 字节"),
        (menu(group(CLICK, {**MINI, "url": "ftp://a.cn"})), "button.0.sub_button.1.url", "https://"),
        (menu({k: v for k, v in MINI.items() if k != "pagepath"}), "button.0.pagepath", "须有 pagepath"),
        (menu({**MINI, "appid": ""}), "button.0.appid", "非空"),
        (menu({"type": "media_id", "name": "图片"}), "button.0.media_id", "须有 media_id"),
    ],
)
def test_invalid_menus_name_the_field(definition: object, field: str, words: str) -> None:
    error = refused(definition)
    assert error.field == field
    assert words in error.message


def test_every_known_type_has_its_fields() -> None:
    values = {"key": "MENU_HELP", "url": "https://a.cn/", "appid": "wx1", "pagepath": "p", "media_id": "m"}
    values["article_id"] = "a"
    for kind, needed in TYPES.items():
        button = {"type": kind, "name": "按钮", **{f: values[f] for f in needed}}
        assert validate_menu(menu(button), KEYS) == menu(button)


def test_click_keys_are_checked_against_the_set_given() -> None:
    assert refused(menu(CLICK), frozenset()).message.endswith("可用：（无）")
    assert validate_menu(menu({**CLICK, "key": "MENU_X"}), {"MENU_X"})["button"][0]["key"] == "MENU_X"


def test_the_default_menu_is_valid_with_the_keys_it_uses() -> None:
    keys = menu_keys(DEFAULT_MENU)
    assert validate_menu(DEFAULT_MENU, set(keys)) == DEFAULT_MENU
    assert [b["name"] for b in DEFAULT_MENU["button"]] == ["会员卡", "积分商城", "我的"]
    assert {"MENU_CARD", "MENU_CHECKIN", "MENU_MALL", "MENU_POINTS", "MENU_COUPONS"} <= set(keys)
    assert len(keys) == len(set(keys))


names = st.text(alphabet="签到a", min_size=1, max_size=16)


@given(st.lists(st.lists(names, max_size=7), min_size=0, max_size=4), names)
def test_a_menu_is_accepted_exactly_when_it_keeps_the_limits(shape: list[list[str]], leaf: str) -> None:
    """Buttons (a list of sub-button names each; none: a plain click button named `leaf`)."""
    buttons = [
        group(*[{**CLICK, "name": n * 3} for n in subs]) if subs else {**CLICK, "name": leaf}
        for subs in shape
    ]

    def size(name: str) -> int:
        return len(name.encode())

    fits = 1 <= len(shape) <= 3 and all(
        len(subs) <= 5 and all(size(n * 3) <= 40 for n in subs) if subs else size(leaf) <= 16
        for subs in shape
    )
    try:
        validate_menu(menu(*buttons), KEYS)
    except RuleError:
        assert not fits
    else:
        assert fits
