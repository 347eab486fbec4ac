"""The simulator's custom-menu endpoints (WeChat's checks and errcodes) and the client's `create_menu` /
`get_menu`, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout

from bot.app import connect_redis
from handlers.rules.menu import DEFAULT_MENU
from handlers.wechat import errors
from handlers.wechat.client import AppCredentials, WeChatClient
from tests.support.wechat_sim import WeChatSim

OA = AppCredentials("wxoamenu000000001", "oa-menu-secret")
CLICK = {"type": "click", "name": "签到", "key": "MENU_CHECKIN"}
VIEW = {"type": "view", "name": "官网", "url": "https://shop.example.com/"}


@pytest.fixture
async def wx(wechat_sim: WeChatSim, redis_url: str) -> AsyncIterator[WeChatClient]:
    wechat_sim.add_app(OA.appid, OA.secret)
    redis = connect_redis(redis_url)
    async with ClientSession(timeout=ClientTimeout(total=5)) as session:
        yield WeChatClient(session, redis, wechat_sim.url)
    await redis.aclose()


async def post_menu(wx: WeChatClient, body: Any) -> dict[str, Any]:
    """POST `body` to menu/create as it is (no client-side checks), WeChat's answer."""
    token = await wx.access_token(OA)
    url = f"{wx.api_base}/cgi-bin/menu/create"
    async with wx.session.post(url, params={"access_token": token}, json=body) as response:
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


async def test_a_pushed_menu_is_what_menu_get_answers(wx: WeChatClient, wechat_sim: WeChatSim) -> None:
    assert await wx.get_menu(OA) is None  # 46003 "menu no exist"
    assert wechat_sim.records("cgi-bin/menu/get")[-1]["errcode"] == 46003
    await wx.create_menu(OA, DEFAULT_MENU)
    [record] = wechat_sim.records("cgi-bin/menu/create")
    assert (record["body"], record["errcode"]) == (DEFAULT_MENU, 0)
    shown = await wx.get_menu(OA)
    assert shown is not None
    assert [b["name"] for b in shown["button"]] == ["会员卡", "积分商城", "我的"]
    assert shown["button"][1] == {**DEFAULT_MENU["button"][1], "sub_button": []}
    card = {"type": "click", "name": "会员卡", "key": "MENU_CARD", "sub_button": []}
    assert shown["button"][0]["sub_button"][0] == card
    await wx.create_menu(OA, {"button": [VIEW]})  # replaces the whole menu
    assert await wx.get_menu(OA) == {"button": [{**VIEW, "sub_button": []}]}


def named(name: str, size: int) -> dict[str, Any]:
    return {**CLICK, "name": name * size}


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"button": []}, 40016),
        ({"button": [CLICK] * 4}, 40016),
        ({"menu": [CLICK]}, 40016),
        ({"button": [{"name": "更多", "sub_button": [CLICK] * 6}]}, 40016),
        ({"button": [{"name": "更多", "sub_button": [{**CLICK, "sub_button": [CLICK]}]}]}, 40016),
        ({"button": [named("x", 17)]}, 40018),
        ({"button": [named("汉", 6)]}, 40018),
        ({"button": [{**CLICK, "name": ""}]}, 40018),
        ({"button": [{"name": "更多", "sub_button": [named("汉", 14)]}]}, 40018),
        ({"button": [{**CLICK, "type": "text"}]}, 40017),
        ({"button": [{"name": "签到", "key": "K"}]}, 40017),
        ({"button": [{**CLICK, "key": "k" * 129}]}, 40019),
        ({"button": [{"type": "click", "name": "签到"}]}, 40019),
        ({"button": [{**VIEW, "url": "shop.example.com"}]}, 40055),
        ({"button": [{**VIEW, "url": "https://a.cn/" + "p" * 1012}]}, 40055),
        ({"button": [{"name": "更多", "sub_button": [{**VIEW, "url": "ftp://a.cn/"}]}]}, 40054),
        ({"button": [{"type": "miniprogram", "name": "小程序", "url": "https://a.cn/"}]}, 47001),
        ({"button": [{"type": "media_id", "name": "图片"}]}, 40007),
    ],
)
async def test_menu_create_refuses_what_wechat_refuses(
    wx: WeChatClient, wechat_sim: WeChatSim, body: dict[str, Any], errcode: int
) -> None:
    answer = await post_menu(wx, body)
    assert answer["errcode"] == errcode
    assert wechat_sim.records("cgi-bin/menu/create")[-1]["errcode"] == errcode
    assert wechat_sim.state.menus == {}  # nothing kept


async def test_wechat_takes_a_plain_http_url_which_memberbot_refuses(wx: WeChatClient) -> None:
    assert (await post_menu(wx, {"button": [{**VIEW, "url": "http://a.cn/"}]}))["errcode"] == 0


async def test_menu_refusals_are_typed_400_errors(wx: WeChatClient, wechat_sim: WeChatSim) -> None:
    wechat_sim.inject_error("cgi-bin/menu/create", 40018, "invalid button name size")
    with pytest.raises(errors.InvalidMenu) as refused:
        await wx.create_menu(OA, {"button": [CLICK]})
    assert refused.value.code == "validation_error" and refused.value.field == "button"
    assert refused.value.message == "微信拒绝了菜单：按钮名称过长"
    wechat_sim.inject_error("cgi-bin/menu/create", 0, status=503)
    with pytest.raises(errors.WeChatUnavailable):
        await wx.create_menu(OA, {"button": [CLICK]})
    assert wechat_sim.state.menus == {}


async def test_get_menu_refetches_an_expired_token_once(wx: WeChatClient, wechat_sim: WeChatSim) -> None:
    await wx.create_menu(OA, {"button": [CLICK]})
    wechat_sim.expire_token(OA.appid)
    assert await wx.get_menu(OA) == {"button": [{**CLICK, "sub_button": []}]}
    assert [r["errcode"] for r in wechat_sim.records("cgi-bin/menu/get")] == [42001, 0]
