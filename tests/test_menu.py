"""The Official Account menu: the admin endpoint and `memberbot menu`, end to end against the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.dialog.intents import build_router
from bot.settings import Settings
from handlers.rules.menu import DEFAULT_MENU, menu_keys, validate_menu
from models.loyalty import AuditLog
from models.menu import WeChatMenu
from models.merchant import Merchant
from tests.conftest import SECRET
from tests.support.factories import make_merchant, staff_headers
from tests.support.wechat_sim import WeChatSim

PATH = "/api/admin/wechat/menu"
ROOT = Path(__file__).resolve().parent.parent
CUSTOM = {
    "button": [
        {"type": "click", "name": "签到", "key": "MENU_CHECKIN"},
        {
            "name": "更多",
            "sub_button": [
                {"type": "view", "name": "门店", "url": "https://shop.example.com/stores"},
                {"type": "click", "name": "我的积分", "key": "MENU_POINTS"},
            ],
        },
    ]
}


def test_the_default_menu_uses_only_keys_the_bot_answers() -> None:
    router = build_router()
    assert validate_menu(DEFAULT_MENU, router.menu_keys()) == DEFAULT_MENU
    for key in menu_keys(DEFAULT_MENU):
        intent = router.by_menu_key(key)
        assert intent is not None and key in intent.menu_keys


async def start(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> tuple[Any, Merchant]:
    client = await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))
    merchant = await make_merchant()
    wechat_sim.add_app(merchant.oa_appid, merchant.oa_secret)
    return client, merchant


def pushes(wechat_sim: WeChatSim) -> list[Any]:
    return [record["body"] for record in wechat_sim.records("cgi-bin/menu/create")]


async def test_an_empty_put_pushes_the_default_menu_and_get_shows_it(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    headers = await staff_headers(client, merchant, "admin")
    before = await (await client.get(PATH, headers=headers)).json()
    assert (before["menu"], before["pushed_at"], before["default_menu"]) == (None, None, DEFAULT_MENU)
    assert {"MENU_CHECKIN", "MENU_CARD", "MENU_MALL"} <= set(before["click_keys"])

    response = await client.put(PATH, headers=headers)
    assert response.status == 200, await response.text()
    pushed = await response.json()
    assert (pushed["menu"], pushed["is_default"], pushed["pushed_by"]) == (DEFAULT_MENU, True, "staff:1")
    assert pushes(wechat_sim) == [DEFAULT_MENU]
    assert wechat_sim.state.menus[merchant.oa_appid] == DEFAULT_MENU
    shown = await (await client.get(PATH, headers=headers)).json()
    assert shown == pushed and shown["pushed_at"] is not None
    [audit] = await AuditLog.filter(merchant_id=merchant.id, action="wechat_menu.push")
    assert (audit.actor, audit.detail) == ("staff:1", {"menu": DEFAULT_MENU, "default": True})

    assert (await client.put(PATH, json={}, headers=headers)).status == 200  # `{}`: the default too
    assert pushes(wechat_sim) == [DEFAULT_MENU, DEFAULT_MENU]


async def test_a_definition_is_pushed_as_given_and_replaces_the_last(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    headers = await staff_headers(client, merchant, "admin")
    assert (await client.put(PATH, headers=headers)).status == 200
    response = await client.put(PATH, json=CUSTOM, headers=headers)
    assert response.status == 200, await response.text()
    assert pushes(wechat_sim)[-1] == CUSTOM
    shown = await (await client.get(PATH, headers=headers)).json()
    assert (shown["menu"], shown["is_default"]) == (CUSTOM, False)
    assert await WeChatMenu.filter(merchant_id=merchant.id).count() == 1
    assert await AuditLog.filter(merchant_id=merchant.id, action="wechat_menu.push").count() == 2


async def test_only_an_admin_may_push(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    for role in ("cashier", "manager"):
        headers = await staff_headers(client, merchant, role)
        response = await client.put(PATH, json=CUSTOM, headers=headers)
        assert response.status == 403
        assert (await response.json())["error"]["message"] == "需要管理员及以上权限"
    assert (await client.put(PATH, json=CUSTOM)).status == 401
    assert pushes(wechat_sim) == []
    assert await WeChatMenu.all().count() == 0
    manager = await staff_headers(client, merchant, "manager", username="reader")
    assert (await client.get(PATH, headers=manager)).status == 200  # a manager may look
    cashier = await staff_headers(client, merchant, "cashier", username="till")
    assert (await client.get(PATH, headers=cashier)).status == 403


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"button": [CUSTOM["button"][0]] * 4}, "button", "1–3 个按钮，现有 4 个"),
        (
            {"button": [{"type": "click", "name": "抽奖", "key": "MENU_LOTTERY"}]},
            "button.0.key",
            "不认识菜单 key 'MENU_LOTTERY'",
        ),
        (
            {
                "button": [
                    {"name": "更多", "sub_button": [{"type": "view", "name": "店", "url": "http://a.cn/"}]}
                ]
            },
            "button.0.sub_button.0.url",
            "https://",
        ),
        (
            {
                "button": [
                    {"name": "更多", "sub_button": [{"type": "click", "name": "啊" * 14, "key": "MENU_ME"}]}
                ]
            },
            "button.0.sub_button.0.name",
            "最多 40 字节",
        ),
        (
            {"button": [{"type": "click", "name": "签到", "key": "MENU_CHECKIN", "x": 1}]},
            "button.0.x",
            "不支持字段",
        ),
        ({"button": [{"type": "click", "name": 3, "key": "MENU_CHECKIN"}]}, "button.0.name", "须为字符串"),
        ({"button": "签到"}, "button", "须为数组"),
        ({"menu": CUSTOM}, "menu", "不支持字段"),
    ],
)
async def test_an_invalid_definition_is_a_400_naming_the_field_and_nothing_is_pushed(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim, body: Any, field: str, words: str
) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    headers = await staff_headers(client, merchant, "admin")
    response = await client.put(PATH, json=body, headers=headers)
    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == ("validation_error", field)
    assert words in error["message"]
    assert pushes(wechat_sim) == []
    assert await WeChatMenu.all().count() == 0


@pytest.mark.parametrize(
    ("inject", "status", "message"),
    [
        ({"errcode": 40018}, 400, "微信拒绝了菜单：按钮名称过长"),
        ({"errcode": 40055}, 400, "微信拒绝了菜单：按钮网址无效（须为完整网址，域名须为公众号可用的域名）"),
        ({"errcode": -1}, 502, "微信服务暂时不可用，请稍后再试"),
        ({"errcode": 0, "status": 503}, 502, "微信服务暂时不可用，请稍后再试"),
        ({"errcode": 40125}, 502, "商户的微信 AppID 或 AppSecret 配置有误，请联系商家"),
    ],
)
async def test_wechat_refusing_or_failing_is_a_clear_error_and_nothing_is_recorded(
    aiohttp_client: Any,
    make_app: Any,
    wechat_sim: WeChatSim,
    inject: dict[str, Any],
    status: int,
    message: str,
) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    headers = await staff_headers(client, merchant, "admin")
    assert (await client.put(PATH, json=CUSTOM, headers=headers)).status == 200
    wechat_sim.inject_error("cgi-bin/menu/create", inject["errcode"], status=inject.get("status", 200))
    response = await client.put(PATH, headers=headers)
    assert response.status == status
    assert (await response.json())["error"]["message"] == message
    shown = await (await client.get(PATH, headers=headers)).json()
    assert (shown["menu"], shown["is_default"]) == (CUSTOM, False)  # still the menu WeChat has
    assert wechat_sim.state.menus[merchant.oa_appid] == CUSTOM
    assert await AuditLog.filter(merchant_id=merchant.id, action="wechat_menu.push").count() == 1


async def test_a_merchant_without_an_official_account_is_told_so(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client = await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))
    merchant = await make_merchant(oa_appid="", oa_secret="")
    headers = await staff_headers(client, merchant, "admin")
    response = await client.put(PATH, headers=headers)
    assert response.status == 409
    assert (await response.json())["error"] == {
        "code": "conflict",
        "message": "本店未配置公众号（oa_appid 与 oa_secret），无法设置菜单",
        "field": "oa_appid",
    }
    assert wechat_sim.records() == []


async def test_the_document_declares_the_optional_body(client: Any) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    put = doc["paths"][PATH]["put"]
    assert put["requestBody"]["required"] is False
    assert {"400", "401", "403", "409", "502"} <= set(put["responses"])
    assert set(doc["paths"][PATH]) == {"get", "put"}


async def memberbot(settings: Settings, sim: WeChatSim, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": SECRET,
        "WECHAT_API_BASE": sim.url,
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "menu",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_cli_pushes_the_default_menu_and_shows_it(
    client: Any, settings: Settings, wechat_sim: WeChatSim
) -> None:
    merchant = await make_merchant()
    wechat_sim.add_app(merchant.oa_appid, merchant.oa_secret)
    code, out, err = await memberbot(settings, wechat_sim, "push", "--merchant", "shop")
    assert code == 0, err
    first, _, printed = out.partition("\n")
    assert first.startswith("pushed the default menu to the Official Account of shop at ")
    assert json.loads(printed) == DEFAULT_MENU
    assert pushes(wechat_sim) == [DEFAULT_MENU]
    row = await WeChatMenu.get(merchant_id=merchant.id)
    assert (row.definition, row.is_default, row.pushed_by) == (DEFAULT_MENU, True, "cli")

    code, out, _ = await memberbot(settings, wechat_sim, "show", "--merchant", "shop")
    first, _, printed = out.partition("\n")
    assert code == 0 and first.endswith("by cli (the default menu)") and json.loads(printed) == DEFAULT_MENU
    code, out, _ = await memberbot(settings, wechat_sim, "show", "--merchant", "shop", "--live")
    assert code == 0 and json.loads(out.partition("\n")[2])["button"][1]["key"] == "MENU_MALL"


async def test_cli_pushes_a_file_and_refuses_a_bad_one_in_one_line(
    client: Any, settings: Settings, wechat_sim: WeChatSim, tmp_path: Path
) -> None:
    merchant = await make_merchant()
    wechat_sim.add_app(merchant.oa_appid, merchant.oa_secret)
    code, out, _ = await memberbot(settings, wechat_sim, "show", "--merchant", "shop")
    assert (code, out.strip()) == (0, "shop: no menu pushed yet (memberbot menu push --merchant shop)")
    good = tmp_path / "menu.json"
    good.write_text(json.dumps(CUSTOM, ensure_ascii=False), encoding="utf-8")
    code, out, err = await memberbot(settings, wechat_sim, "push", "--merchant", "shop", "--file", str(good))
    assert code == 0, err
    assert pushes(wechat_sim) == [CUSTOM]

    bad = tmp_path / "bad.json"
    broken = {"button": [{"type": "click", "name": "签到", "key": "MENU_NOPE"}]}
    for content, words in (
        (json.dumps(broken), "button.0.key: 聊天机器人不认识菜单 key 'MENU_NOPE'"),
        ("{not json", "is not JSON"),
    ):
        bad.write_text(content, encoding="utf-8")
        code, out, err = await memberbot(
            settings, wechat_sim, "push", "--merchant", "shop", "--file", str(bad)
        )
        assert (code, out) == (2, "")
        assert err.count("\n") == 1 and words in err
    code, _, err = await memberbot(
        settings, wechat_sim, "push", "--merchant", "shop", "--file", "/nonexistent"
    )
    assert code == 2 and err.startswith("memberbot: cannot read /nonexistent")
    assert pushes(wechat_sim) == [CUSTOM]  # nothing more was sent
    assert (await WeChatMenu.get(merchant_id=merchant.id)).definition == CUSTOM

    wechat_sim.inject_error("cgi-bin/menu/create", 40017)
    code, _, err = await memberbot(settings, wechat_sim, "push", "--merchant", "shop")
    assert (code, err.strip()) == (2, "memberbot: 微信拒绝了菜单：按钮类型不正确")
    wechat_sim.inject_error("cgi-bin/menu/create", -1)
    code, _, err = await memberbot(settings, wechat_sim, "push", "--merchant", "shop")
    assert (code, err.strip()) == (1, "memberbot: 微信服务暂时不可用，请稍后再试")
    code, _, err = await memberbot(settings, wechat_sim, "push", "--merchant", "nowhere")
    assert code == 1 and "nowhere" in err
