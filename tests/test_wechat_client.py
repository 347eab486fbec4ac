"""The WeChat API client, over real HTTP against the simulator, with the test Redis (real or embedded)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout
from redis.asyncio import Redis

from bot.app import connect_redis
from handlers.core.chat import Article
from handlers.core.errors import DomainError, ErrorCode
from handlers.wechat import errors
from handlers.wechat.client import AppCredentials, QrTicket, WeChatClient, mp_credentials, oa_credentials
from models.merchant import Merchant
from tests.support.wechat_sim import WeChatSim
from webhooks.appkeys import WECHAT

OA = AppCredentials("wxoa0000000000001", "oa-secret")
MP = AppCredentials("wxmp0000000000001", "mp-secret")
FAN = "o-fan-0001"
TEMPLATE = "tmpl-points"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    connection = connect_redis(redis_url)
    yield connection
    await connection.aclose()


@pytest.fixture
async def session() -> AsyncIterator[ClientSession]:
    async with ClientSession(timeout=ClientTimeout(total=5)) as http:
        yield http


@pytest.fixture
def sim(wechat_sim: WeChatSim) -> WeChatSim:
    wechat_sim.add_app(OA.appid, OA.secret)
    wechat_sim.add_app(MP.appid, MP.secret)
    wechat_sim.add_follower(OA.appid, FAN, unionid="u-1")
    wechat_sim.add_template(OA.appid, TEMPLATE)
    return wechat_sim


@pytest.fixture
def wx(session: ClientSession, redis: Redis, sim: WeChatSim) -> WeChatClient:
    return WeChatClient(session, redis, sim.url)


def token_fetches(sim: WeChatSim) -> list[dict[str, Any]]:
    return [record["body"] for record in sim.records("cgi-bin/stable_token")]


async def test_concurrent_first_calls_share_one_token_fetch(wx: WeChatClient, sim: WeChatSim) -> None:
    tokens = await asyncio.gather(*(wx.access_token(OA) for _ in range(10)))
    assert len(set(tokens)) == 1
    assert token_fetches(sim) == [
        {"grant_type": "client_credential", "appid": OA.appid, "secret": OA.secret, "force_refresh": False}
    ]


async def test_token_is_cached_in_redis_until_five_minutes_before_expiry(
    wx: WeChatClient, redis: Redis, session: ClientSession, sim: WeChatSim
) -> None:
    token = await wx.access_token(OA)
    assert 7200 - 300 - 5 <= await redis.ttl(f"wx:token:{OA.appid}") <= 7200 - 300
    other_process = WeChatClient(session, redis, sim.url)
    assert await other_process.access_token(OA) == token
    assert len(token_fetches(sim)) == 1


async def test_clients_in_different_processes_fetch_once(
    session: ClientSession, redis: Redis, sim: WeChatSim
) -> None:
    first, second = WeChatClient(session, redis, sim.url), WeChatClient(session, redis, sim.url)
    tokens = await asyncio.gather(*(client.access_token(OA) for client in (first, second) * 5))
    assert len(set(tokens)) == 1
    assert len(token_fetches(sim)) == 1


async def test_a_process_keeps_its_token_a_minute_and_drops_it_when_refused(
    wx: WeChatClient, redis: Redis, session: ClientSession, sim: WeChatSim
) -> None:
    token = await wx.access_token(OA)
    await redis.delete(f"wx:token:{OA.appid}")
    assert await wx.access_token(OA) == token  # its own copy: neither Redis nor WeChat asked
    assert len(token_fetches(sim)) == 1
    other_process = WeChatClient(session, redis, sim.url)
    fresh = await other_process.access_token(OA)  # nothing in Redis: it fetches (the same token)
    assert fresh == token and len(token_fetches(sim)) == 2
    sim.invalidate_token(OA.appid)
    assert await wx.user_unionid(OA, FAN) == "u-1"  # 40001 drops the copy, fetches once, retries
    assert [r["errcode"] for r in sim.records("cgi-bin/user/info")] == [40001, 0]
    assert await wx.access_token(OA) != token and len(token_fetches(sim)) == 3


@pytest.mark.parametrize(("spoil", "errcode"), [("invalidate_token", 40001), ("expire_token", 42001)])
async def test_rejected_token_is_fetched_again_once_and_the_call_retried(
    wx: WeChatClient, sim: WeChatSim, spoil: str, errcode: int
) -> None:
    sim.interact(OA.appid, FAN)
    old = await wx.access_token(OA)
    getattr(sim, spoil)(OA.appid)
    await wx.send_custom_text(OA, FAN, "您好")
    sends = sim.records("cgi-bin/message/custom/send")
    assert [record["errcode"] for record in sends] == [errcode, 0]
    assert sends[0]["query"]["access_token"] == old != sends[1]["query"]["access_token"]
    assert [body["force_refresh"] for body in token_fetches(sim)] == [False, False]
    assert sim.force_refresh_count() == 0


async def test_a_second_invalid_token_answer_surfaces(wx: WeChatClient, sim: WeChatSim) -> None:
    sim.interact(OA.appid, FAN)
    sim.inject_error(CUSTOM, 40001, "invalid credential", times=2)
    with pytest.raises(errors.InvalidAccessToken) as caught:
        await wx.send_custom_text(OA, FAN, "您好")
    assert caught.value.errcode == 40001
    assert len(sim.records("cgi-bin/message/custom/send")) == 2
    assert len(token_fetches(sim)) == 2
    assert sim.force_refresh_count() == 0


async def test_tokens_and_secrets_are_never_logged(
    wx: WeChatClient, sim: WeChatSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.interact(OA.appid, FAN)
    first = await wx.access_token(OA)
    sim.invalidate_token(OA.appid)
    await wx.send_custom_text(OA, FAN, "hi")
    second = await wx.access_token(OA)
    logged = " ".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "wechat access token" in logged
    for secret in (first, second, OA.secret):
        assert secret not in logged


async def test_custom_text_goes_out_as_utf8(wx: WeChatClient, sim: WeChatSim) -> None:
    sim.interact(OA.appid, FAN)
    await wx.send_custom_text(OA, FAN, "积分到账")
    record = sim.records("cgi-bin/message/custom/send")[0]
    assert record["body"] == {"touser": FAN, "msgtype": "text", "text": {"content": "积分到账"}}
    assert "积分到账" in record["raw"]


async def test_custom_news_sends_exactly_one_article(wx: WeChatClient, sim: WeChatSim) -> None:
    sim.interact(OA.appid, FAN)
    article = Article("会员卡", "点击查看", "https://example.com/card", "https://example.com/c.png")
    await wx.send_custom_news(OA, FAN, [article])
    assert sim.records("cgi-bin/message/custom/send")[0]["body"]["news"] == {
        "articles": [
            {
                "title": "会员卡",
                "description": "点击查看",
                "url": "https://example.com/card",
                "picurl": "https://example.com/c.png",
            }
        ]
    }
    with pytest.raises(errors.WeChatRequestInvalid):
        await wx.send_custom_news(OA, FAN, [article, article])
    assert len(sim.records("cgi-bin/message/custom/send")) == 1


async def test_template_send_returns_msgid_and_sends_links(wx: WeChatClient, sim: WeChatSim) -> None:
    msgid = await wx.send_template(
        OA,
        FAN,
        TEMPLATE,
        {"thing1": "二十个字" * 5, "amount2": "100"},
        url="https://example.com/p",
        miniprogram=(MP.appid, "pages/card/index"),
        client_msg_id="points:42",
    )
    body = sim.records("cgi-bin/message/template/send")[0]["body"]
    assert isinstance(msgid, int)
    assert body == {
        "touser": FAN,
        "template_id": TEMPLATE,
        "client_msg_id": "points:42",
        "url": "https://example.com/p",
        "miniprogram": {"appid": MP.appid, "pagepath": "pages/card/index"},
        "data": {"thing1": {"value": "二十个字" * 5}, "amount2": {"value": "100"}},
    }


@pytest.mark.parametrize(
    ("data", "client_msg_id"),
    [
        ({"thing1": "x" * 21}, "id-1"),
        ({"thing1": "第一行\n第二行"}, "id-1"),
        ({"thing1": "a\rb"}, "id-1"),
        ({}, "id-1"),
        ({"thing1": "ok"}, ""),
        ({"thing1": "ok"}, "积" * 22),
    ],
)
async def test_template_rules_are_enforced_before_sending(
    wx: WeChatClient, sim: WeChatSim, data: dict[str, str], client_msg_id: str
) -> None:
    with pytest.raises(errors.WeChatRequestInvalid) as caught:
        await wx.send_template(OA, FAN, TEMPLATE, data, client_msg_id=client_msg_id)
    assert caught.value.code == ErrorCode.VALIDATION
    assert sim.records("cgi-bin/message/template/send") == []


async def test_repeated_client_msg_id_raises_with_the_original_msgid(wx: WeChatClient) -> None:
    msgid = await wx.send_template(OA, FAN, TEMPLATE, {"thing1": "到账"}, client_msg_id="points:7")
    with pytest.raises(errors.DuplicateClientMsgId) as caught:
        await wx.send_template(OA, FAN, TEMPLATE, {"thing1": "到账"}, client_msg_id="points:7")
    assert (caught.value.errcode, caught.value.msgid) == (45065, msgid)


async def test_subscribe_send_uses_one_grant(wx: WeChatClient, sim: WeChatSim) -> None:
    sim.add_follower(MP.appid, "o-mp-1")
    sim.add_template(MP.appid, "sub-1")
    sim.grant(MP.appid, "o-mp-1", "sub-1")
    await wx.send_subscribe(MP, "o-mp-1", "sub-1", {"thing1": "签到提醒"}, page="pages/index/index")
    body = sim.records("cgi-bin/message/subscribe/send")[0]["body"]
    assert body == {
        "touser": "o-mp-1",
        "template_id": "sub-1",
        "data": {"thing1": {"value": "签到提醒"}},
        "miniprogram_state": "formal",
        "lang": "zh_CN",
        "page": "pages/index/index",
    }
    with pytest.raises(errors.SubscribeRefused):
        await wx.send_subscribe(MP, "o-mp-1", "sub-1", {"thing1": "签到提醒"})


async def test_create_qrcode_makes_a_temporary_string_scene(wx: WeChatClient, sim: WeChatSim) -> None:
    qr = await wx.create_qrcode(OA, "ref:abc/1", 2_592_000)
    assert sim.records("cgi-bin/qrcode/create")[0]["body"] == {
        "expire_seconds": 2_592_000,
        "action_name": "QR_STR_SCENE",
        "action_info": {"scene": {"scene_str": "ref:abc/1"}},
    }
    assert qr.expire_seconds == 2_592_000
    assert qr.url.startswith("http://weixin.qq.com/q/")
    assert qr.image_url == "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=" + qr.ticket
    assert QrTicket("gQH+4Dw/AAA=", "", 60).image_url.endswith("?ticket=gQH%2B4Dw%2FAAA%3D")


@pytest.mark.parametrize(("scene", "expire"), [("", 60), ("s" * 65, 60), ("ok", 0), ("ok", 2_592_001)])
async def test_create_qrcode_rejects_bad_input(
    wx: WeChatClient, sim: WeChatSim, scene: str, expire: int
) -> None:
    with pytest.raises(errors.WeChatRequestInvalid):
        await wx.create_qrcode(OA, scene, expire)
    assert sim.records() == []


async def test_code2session_is_single_use_and_needs_no_token(wx: WeChatClient, sim: WeChatSim) -> None:
    code = sim.mint_code(MP.appid, "o-mp-2", unionid="u-2")
    session = await wx.code2session(MP, code)
    assert (session.openid, session.unionid) == ("o-mp-2", "u-2")
    assert session.session_key and session.session_key not in repr(session)
    with pytest.raises(errors.CodeUsed):
        await wx.code2session(MP, code)
    assert token_fetches(sim) == []
    assert "access_token" not in sim.records("sns/jscode2session")[0]["query"]


async def test_code2session_without_unionid_and_with_bad_codes(wx: WeChatClient, sim: WeChatSim) -> None:
    assert (await wx.code2session(MP, sim.mint_code(MP.appid, "o-mp-3"))).unionid is None
    with pytest.raises(errors.InvalidCode):
        await wx.code2session(MP, "never-minted")
    stale = sim.mint_code(MP.appid, "o-mp-3")
    sim.advance(301)
    with pytest.raises(errors.InvalidCode):
        await wx.code2session(MP, stale)


async def test_wxacode_returns_png_bytes(wx: WeChatClient, sim: WeChatSim) -> None:
    image = await wx.get_unlimited_wxacode(MP, "c=Ab3_x-9", "pages/card/index", width=280)
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    assert sim.records("wxa/getwxacodeunlimit")[0]["body"] == {
        "scene": "c=Ab3_x-9",
        "page": "pages/card/index",
        "width": 280,
        "env_version": "release",
        "check_path": True,
    }


async def test_wxacode_json_error_becomes_a_typed_error(wx: WeChatClient, sim: WeChatSim) -> None:
    sim.state.wxacode_per_minute = 1
    await wx.get_unlimited_wxacode(MP, "a", "pages/index/index")
    with pytest.raises(errors.FrequencyLimited) as caught:
        await wx.get_unlimited_wxacode(MP, "a", "pages/index/index")
    assert caught.value.errcode == 45009


@pytest.mark.parametrize(
    ("scene", "page", "width"),
    [
        ("", "p/i", 430),
        ("x" * 33, "p/i", 430),
        ("会员", "p/i", 430),
        ("a%20b", "p/i", 430),
        ("a b", "p/i", 430),
        ("ok", "/p/i", 430),
        ("ok", "p/i?x=1", 430),
        ("ok", "p/i", 1281),
    ],
)
async def test_wxacode_input_is_validated_before_calling(
    wx: WeChatClient, sim: WeChatSim, scene: str, page: str, width: int
) -> None:
    with pytest.raises(errors.WeChatRequestInvalid):
        await wx.get_unlimited_wxacode(MP, scene, page, width=width)
    assert sim.records() == []


CUSTOM = "cgi-bin/message/custom/send"


async def send_text(wx: WeChatClient) -> None:
    await wx.send_custom_text(OA, FAN, "您好")


@pytest.mark.parametrize(
    ("setup", "expected", "errcode"),
    [
        (lambda sim: None, errors.OutOfResponseWindow, 45015),
        (lambda sim: sim.add_follower(OA.appid, FAN, following=False), errors.RequireSubscribe, 43004),
        (lambda sim: sim.inject_error(CUSTOM, 40003), errors.InvalidOpenid, 40003),
        (lambda sim: sim.inject_error(CUSTOM, 45009), errors.FrequencyLimited, 45009),
        (lambda sim: sim.inject_error(CUSTOM, 45011), errors.FrequencyLimited, 45011),
        (lambda sim: sim.inject_error(CUSTOM, -1), errors.WeChatUnavailable, -1),
        (lambda sim: sim.inject_error(CUSTOM, 0, status=502), errors.WeChatUnavailable, -1),
        (lambda sim: sim.inject_error("cgi-bin/stable_token", 40125), errors.InvalidCredential, 40125),
        (lambda sim: sim.inject_error(CUSTOM, 48001), errors.WeChatError, 48001),
    ],
)
async def test_wechat_errors_are_typed(
    wx: WeChatClient, sim: WeChatSim, setup: Any, expected: type[errors.WeChatError], errcode: int
) -> None:
    setup(sim)
    with pytest.raises(errors.WeChatError) as caught:
        await send_text(wx)
    assert type(caught.value) is expected
    assert caught.value.errcode == errcode
    assert isinstance(caught.value, DomainError) and caught.value.code == ErrorCode.WECHAT_ERROR


async def test_unknown_openid_and_template(wx: WeChatClient, sim: WeChatSim) -> None:
    sim.interact(OA.appid, FAN)
    with pytest.raises(errors.InvalidOpenid):
        await wx.send_custom_text(OA, "o-stranger", "hi")
    with pytest.raises(errors.InvalidTemplate):
        await wx.send_template(OA, FAN, "tmpl-unknown", {"thing1": "x"}, client_msg_id="m1")


async def test_unreachable_wechat_is_unavailable(session: ClientSession, redis: Redis) -> None:
    wx = WeChatClient(session, redis, "http://127.0.0.1:9")
    with pytest.raises(errors.WeChatUnavailable) as caught:
        await wx.access_token(OA)
    assert "unreachable" in caught.value.errmsg  # the cause, for the log
    assert caught.value.message == "微信服务暂时不可用，请稍后再试"  # what a caller is shown


@pytest.mark.parametrize(
    "errcode", [-1, 40013, 40001, 40003, 43004, 43101, 45015, 45009, 40029, 40163, 48001]
)
def test_wechat_errors_show_chinese_and_keep_errcode_and_errmsg_for_the_log(errcode: int) -> None:
    error = errors.error_for(errcode, "invalid appid rid: 65f0a1b2-1c2d3e4f")
    assert re.search(r"[\u4e00-\u9fff]", error.message), error.message
    assert "rid" not in error.message and "invalid" not in error.message and str(errcode) not in error.message
    assert error.log_fields() == {
        "error": type(error).__name__,
        "errcode": errcode,
        "errmsg": "invalid appid rid: 65f0a1b2-1c2d3e4f",
    }
    assert f"errcode {errcode}: invalid appid rid:" in str(error)  # tracebacks and the task outbox


async def test_merchant_credentials_require_both_values() -> None:
    merchant = Merchant(slug="m", name="M", oa_appid="wxoa", oa_secret="s", mp_appid="wxmp")
    assert oa_credentials(merchant) == AppCredentials("wxoa", "s")
    assert "secret" not in repr(oa_credentials(merchant))
    with pytest.raises(errors.WeChatNotConfigured) as caught:
        mp_credentials(merchant)
    assert caught.value.field == "mp_appid"


async def test_the_app_factory_wires_the_client_to_wechat_api_base(
    aiohttp_client: Any, make_app: Any, sim: WeChatSim
) -> None:
    client = await aiohttp_client(make_app(wechat_api_base=sim.url))
    token = await client.app[WECHAT].access_token(OA)
    assert token.startswith("SIMTOKEN_")
    assert len(token_fetches(sim)) == 1


async def test_user_unionid_is_read_with_the_token_and_retried_once(wx: WeChatClient, sim: WeChatSim) -> None:
    assert await wx.user_unionid(OA, FAN) == "u-1"
    sim.add_follower(OA.appid, "o-no-binding")
    assert await wx.user_unionid(OA, "o-no-binding") is None
    with pytest.raises(errors.InvalidOpenid):
        await wx.user_unionid(OA, "o-stranger")
    sim.inject_error("cgi-bin/user/info", 40001)
    assert await wx.user_unionid(OA, FAN) == "u-1"  # one re-fetch of the token, one retry
    assert sim.records("cgi-bin/user/info")[0]["query"]["openid"] == FAN
