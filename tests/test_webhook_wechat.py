"""The Official Account callback over real HTTP: verification, the three modes, refusals, dedup, deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.demo import DEMO
from bot.dialog import Dispatcher
from handlers.core import config_cache
from handlers.core.chat import Article, ChatReply, IncomingMessage, NewsReply, TextReply
from handlers.staff.merchants import MerchantInput, create_merchant
from models.merchant import Merchant
from tests.support.wechat_push import Mode, WeChatPusher, event_xml, sign, text_xml
from tests.support.wechat_sim import WeChatSim
from webhooks.appkeys import BACKGROUND, REDIS
from webhooks.wechat import callback as wechat
from webhooks.wechat import dedup

TOKEN = "shoptoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wxshop00000000001"
GONE = "oGoneUser0123456789abcdefghi"  # a realistic 28-character openid
MODES: list[Mode] = ["plain", "compat", "safe"]
Reply = Callable[[IncomingMessage], Awaitable[ChatReply | None]]


class Recorder:
    """Stands in for the chat bot: records each dispatched message and answers with `respond`."""

    def __init__(self) -> None:
        self.messages: list[IncomingMessage] = []
        self.respond: Reply = self.echo

    @staticmethod
    async def echo(message: IncomingMessage) -> ChatReply | None:
        return TextReply(f"收到:{message.content or message.event}")


@pytest.fixture
def bot(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()

    async def dispatch(
        self: Dispatcher, merchant: Merchant, message: IncomingMessage, dialog: Any = None
    ) -> ChatReply | None:
        recorder.messages.append(message)
        return await recorder.respond(message)

    monkeypatch.setattr(Dispatcher, "dispatch", dispatch)
    return recorder


@pytest.fixture
async def shop(client: Any) -> Merchant:
    return await create_merchant(
        MerchantInput(
            slug="shop",
            name="小店",
            oa_appid=APPID,
            oa_secret="shop-secret",
            oa_token=TOKEN,
            oa_aes_key=AES_KEY,
        )
    )


@pytest.fixture
def pusher(client: Any, shop: Merchant) -> WeChatPusher:
    return WeChatPusher(client, "shop", TOKEN, AES_KEY, APPID)


def _query(timestamp: int | None = None, nonce: str = "123", **extra: str) -> dict[str, str]:
    stamp = str(timestamp or int(time.time()))
    return {"signature": sign(TOKEN, stamp, nonce), "timestamp": stamp, "nonce": nonce, **extra}


async def test_url_verification_echoes_echostr(client: Any, shop: Merchant) -> None:
    response = await client.get("/wechat/shop", params=_query(echostr="8923746512"))
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert await response.text() == "8923746512"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"signature": "0" * 40}, "bad_signature"),
        ({"signature": ""}, "bad_signature"),
        ({"timestamp": "1409735669", "signature": sign(TOKEN, "1409735669", "123")}, "stale_timestamp"),
    ],
)
async def test_url_verification_refusals(
    client: Any, shop: Merchant, query: dict[str, str], code: str
) -> None:
    response = await client.get("/wechat/shop", params={**_query(echostr="e"), **query})
    assert response.status == 403
    assert (await response.json())["error"]["code"] == code


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_unknown_merchant_is_404(client: Any, shop: Merchant, method: str) -> None:
    for slug in ("nobody", "NOT%20A%20SLUG"):
        response = await client.request(method, f"/wechat/{slug}", params=_query(echostr="e"), data=b"<xml/>")
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "merchant_not_found"


@pytest.mark.parametrize("mode", MODES)
async def test_text_message_in_every_mode(pusher: WeChatPusher, bot: Recorder, mode: Mode) -> None:
    reply = await pusher.text("o-user-1", "你好", mode=mode, msg_id="6054768590064713728")
    assert (reply.status, reply.type, reply.content) == (200, "text", "收到:你好")
    assert (reply.to_user, reply.from_user) == ("o-user-1", pusher.account)
    [message] = bot.messages
    assert (message.openid, message.kind, message.content, message.msg_id) == (
        "o-user-1",
        "text",
        "你好",
        "6054768590064713728",
    )
    assert abs(message.created_at.timestamp() - time.time()) < 5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("event", "key", "ticket", "expected"),
    [
        (
            "subscribe",
            "qrscene_staff42",
            "gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2tIVXdvZmJsc0ZTUjVB",
            ("subscribe", "staff42"),
        ),
        ("subscribe", "", "", ("subscribe", "")),
        (
            "SCAN",
            "staff42",
            "gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2tIVXdvZmJsc0ZTUjVB",
            ("scan", "staff42"),
        ),
        ("CLICK", "MENU_CARD", "", ("click", "MENU_CARD")),
        ("unsubscribe", "", "", ("unsubscribe", "")),
    ],
)
async def test_events_in_every_mode(
    pusher: WeChatPusher,
    bot: Recorder,
    mode: Mode,
    event: str,
    key: str,
    ticket: str,
    expected: tuple[str, str],
) -> None:
    reply = await pusher.event("o-user-2", event, key, mode=mode, ticket=ticket)
    assert reply.status == 200 and reply.content == f"收到:{expected[0]}"
    [message] = bot.messages
    assert (message.kind, message.event, message.event_key) == ("event", *expected)
    if ticket:
        assert message.raw["Ticket"] == ticket


async def test_unknown_types_and_events_are_dispatched_not_500(pusher: WeChatPusher, bot: Recorder) -> None:
    popup = (
        "<SubscribeMsgPopupEvent><List><TemplateId><![CDATA[tpl-1]]></TemplateId>"
        "<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene>"
        "</List></SubscribeMsgPopupEvent>"
    )
    assert (await pusher.event("o-user", "subscribe_msg_popup_event", extra=popup)).status == 200
    odd = text_xml("o-user", "x", msg_id="99", create_time=int(time.time())).replace("[text]", "[hologram]")
    assert (await pusher.push(odd, mode="safe")).status == 200
    popup_message, odd_message = bot.messages
    assert popup_message.event == "subscribe_msg_popup_event"
    assert popup_message.raw["SubscribeMsgPopupEvent.List[0].TemplateId"] == "tpl-1"
    assert odd_message.kind == "hologram"


@pytest.mark.parametrize("mode", ["plain", "safe"])
async def test_news_and_empty_replies(pusher: WeChatPusher, bot: Recorder, mode: Mode) -> None:
    async def news(message: IncomingMessage) -> ChatReply | None:
        return NewsReply(
            (Article("会员卡", "点击查看", "https://example.com/card", "https://example.com/c.png"),)
        )

    bot.respond = news
    reply = await pusher.text("o-user", "卡", mode=mode)
    assert reply.type == "news"
    assert reply.articles == (
        {
            "title": "会员卡",
            "description": "点击查看",
            "url": "https://example.com/card",
            "image": "https://example.com/c.png",
        },
    )

    async def nothing(message: IncomingMessage) -> ChatReply | None:
        return None

    bot.respond = nothing
    reply = await pusher.text("o-user", "嗯", mode=mode)
    assert reply.empty and reply.body == ""


async def _refused(pusher: WeChatPusher, bot: Recorder, query: dict[str, str], body: bytes) -> Any:
    response = await pusher.client.post(pusher.path, params=query, data=body)
    assert bot.messages == []
    return response.status, (await response.json())["error"]["code"]


async def test_plaintext_signature_and_replay_refusals_change_nothing(
    pusher: WeChatPusher, bot: Recorder
) -> None:
    now = int(time.time())
    xml = text_xml("o-user", "hi", msg_id="555", create_time=now)
    assert await _refused(pusher, bot, _query(signature="f" * 40), xml.encode()) == (403, "bad_signature")
    for offset in (-301, 301):  # the clock read just before each request: a busy machine cannot blur it
        stamp = int(time.time()) + offset
        assert await _refused(pusher, bot, _query(stamp), xml.encode()) == (403, "stale_timestamp")
    # Nothing was claimed by the refusals: the same MsgId, properly signed, is handled now.
    assert (await pusher.push(xml)).content == "收到:hi"
    assert len(bot.messages) == 1


async def test_safe_mode_refusals(pusher: WeChatPusher, bot: Recorder) -> None:
    stamp, nonce = str(int(time.time())), "77"
    xml = text_xml("o-user", "hi", msg_id="556", create_time=int(stamp))
    query, body = pusher.signed(xml, "safe", timestamp=stamp, nonce=nonce)
    forged = {**query, "msg_signature": "0" * 40}
    assert await _refused(pusher, bot, forged, body.encode()) == (403, "bad_signature")
    other = WeChatPusher(pusher.client, "shop", TOKEN, AES_KEY, "wxsomeoneelse0001")
    query, body = other.signed(xml, "safe", timestamp=stamp, nonce=nonce)
    assert await _refused(pusher, bot, query, body.encode()) == (403, "forbidden")
    garbage = "bm90IGEgcmVhbCBwYXlsb2Fk"
    query = {**query, "msg_signature": sign(TOKEN, stamp, nonce, garbage)}
    body = f"<xml><Encrypt><![CDATA[{garbage}]]></Encrypt></xml>"
    assert await _refused(pusher, bot, query, body.encode()) == (400, "bad_message")


@pytest.mark.parametrize(
    "body",
    [
        b"<xml><ToUserName>a",
        b"",
        "<xml>\xff</xml>".encode("latin-1"),
        b"<xml><MsgType>text</MsgType></xml>",
        b"<html></html>",
    ],
)
async def test_malformed_bodies_are_400(pusher: WeChatPusher, bot: Recorder, body: bytes) -> None:
    assert await _refused(pusher, bot, _query(), body) == (400, "bad_message")


async def test_unknown_encrypt_type_is_400(pusher: WeChatPusher, bot: Recorder) -> None:
    assert await _refused(pusher, bot, _query(encrypt_type="des"), b"<xml/>") == (400, "bad_message")


async def test_oversized_body_is_413(aiohttp_client: Any, make_app: Any, bot: Recorder) -> None:
    client = await aiohttp_client(make_app(max_body_bytes=2048))
    await create_merchant(MerchantInput(slug="shop", name="小店", oa_token=TOKEN))
    xml = text_xml("o-user", "长" * 4000, msg_id="1", create_time=int(time.time()))
    response = await client.post("/wechat/shop", params=_query(), data=xml.encode())
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"
    assert bot.messages == []


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
    + "]><xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>1</CreateTime>"
    "<MsgType>text</MsgType><Content>&j;</Content><MsgId>1</MsgId></xml>"
)
EXTERNAL = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>1</CreateTime>"
    "<MsgType>text</MsgType><Content>&x;</Content><MsgId>2</MsgId></xml>"
)


@pytest.mark.parametrize("attack", [BILLION_LAUGHS, EXTERNAL])
@pytest.mark.parametrize("mode", MODES)
async def test_entity_attacks_are_refused(
    pusher: WeChatPusher, bot: Recorder, attack: str, mode: Mode
) -> None:
    reply = await pusher.push(attack, mode=mode)
    assert (reply.status, reply.error) == (400, "bad_message")
    assert "DOCTYPE" in reply.body  # refused by the declaration check, not by expat's own limits
    assert bot.messages == []


async def test_concurrent_duplicates_take_effect_once_and_share_the_reply(
    pusher: WeChatPusher, bot: Recorder
) -> None:
    async def slow_counter(message: IncomingMessage) -> ChatReply | None:
        await asyncio.sleep(0.2)
        return TextReply(f"第{len(bot.messages)}次")

    bot.respond = slow_counter
    xml = text_xml("o-user", "签到", msg_id="9000000000000000001", create_time=int(time.time()))
    replies = await asyncio.gather(*(pusher.push(xml, mode=mode) for mode in MODES))
    assert len(bot.messages) == 1
    assert [(r.status, r.content) for r in replies] == [(200, "第1次")] * 3
    retry = await pusher.push(xml, mode="safe")
    assert retry.content == "第1次" and len(bot.messages) == 1


async def test_event_retries_are_deduplicated_by_user_time_and_event(
    pusher: WeChatPusher, bot: Recorder
) -> None:
    stamp = int(time.time())
    for _ in range(3):
        await pusher.event("o-user", "CLICK", "MENU_CARD", create_time=stamp)
    await pusher.event("o-user", "CLICK", "MENU_CARD", create_time=stamp + 1)
    await pusher.event("o-other", "CLICK", "MENU_CARD", create_time=stamp)
    assert [m.openid for m in bot.messages] == ["o-user", "o-user", "o-other"]


async def test_same_msg_id_for_two_merchants_is_two_messages(
    client: Any, pusher: WeChatPusher, bot: Recorder
) -> None:
    await create_merchant(MerchantInput(slug="cafe", name="咖啡", oa_token="cafetoken"))
    cafe = WeChatPusher(client, "cafe", "cafetoken", "", "")
    await pusher.text("o-user", "a", msg_id="42")
    await cafe.text("o-user", "a", msg_id="42")
    assert len(bot.messages) == 2


async def test_slow_reply_goes_out_as_customer_service_message(
    aiohttp_client: Any, make_app: Any, bot: Recorder, wechat_sim: WeChatSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wechat, "REPLY_DEADLINE", 0.2)
    client = await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))
    await create_merchant(
        MerchantInput(
            slug="shop",
            name="小店",
            oa_appid=APPID,
            oa_secret="shop-secret",
            oa_token=TOKEN,
            oa_aes_key=AES_KEY,
        )
    )
    wechat_sim.add_app(APPID, "shop-secret")
    wechat_sim.add_follower(APPID, "o-slow")
    wechat_sim.interact(APPID, "o-slow")
    release = asyncio.Event()

    async def slow(message: IncomingMessage) -> ChatReply | None:
        await release.wait()
        return TextReply("慢慢来的回复")

    bot.respond = slow
    pusher = WeChatPusher(client, "shop", TOKEN, AES_KEY, APPID)
    started = time.monotonic()
    reply = await pusher.text("o-slow", "查积分", mode="safe", msg_id="31")
    assert reply.empty and reply.body == ""
    assert time.monotonic() - started < 1.5
    retry = await pusher.text("o-slow", "查积分", mode="safe", msg_id="31")
    assert retry.empty and len(bot.messages) == 1
    assert wechat_sim.records("cgi-bin/message/custom/send") == []
    release.set()
    await client.app[BACKGROUND].drain(grace=5)
    [sent] = wechat_sim.records("cgi-bin/message/custom/send")
    assert sent["body"]["touser"] == "o-slow"
    assert sent["body"]["text"] == {"content": "慢慢来的回复"}


async def test_failed_late_delivery_is_logged_not_raised(
    aiohttp_client: Any,
    make_app: Any,
    bot: Recorder,
    wechat_sim: WeChatSim,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(wechat, "REPLY_DEADLINE", 0.05)
    client = await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))
    await create_merchant(
        MerchantInput(slug="shop", name="小店", oa_appid=APPID, oa_secret="shop-secret", oa_token=TOKEN)
    )
    wechat_sim.add_app(APPID, "shop-secret")
    wechat_sim.add_follower(APPID, GONE, following=False)  # WeChat refuses: unfollowed

    async def slow(message: IncomingMessage) -> ChatReply | None:
        await asyncio.sleep(0.2)
        return TextReply("迟到")

    bot.respond = slow
    assert (await WeChatPusher(client, "shop", TOKEN, "", APPID).text(GONE, "hi")).empty
    await client.app[BACKGROUND].drain(grace=5)
    assert len(wechat_sim.records("cgi-bin/message/custom/send")) == 1
    assert any(r.message.startswith("late reply not delivered") for r in caplog.records)
    assert not any(GONE in r.getMessage() or GONE in str(r.__dict__) for r in caplog.records)  # masked


async def test_a_failing_bot_answers_empty_not_500(pusher: WeChatPusher, bot: Recorder) -> None:
    async def broken(message: IncomingMessage) -> ChatReply | None:
        raise RuntimeError("boom")

    bot.respond = broken
    reply = await pusher.text("o-user", "hi", msg_id="77")
    assert reply.empty
    assert (await pusher.text("o-user", "hi", msg_id="77")).empty
    assert len(bot.messages) == 1


async def test_redis_down_is_503_and_nothing_dispatched(
    aiohttp_client: Any, make_app: Any, bot: Recorder
) -> None:
    client = await aiohttp_client(make_app(redis_url="redis://127.0.0.1:1/0"))
    await create_merchant(MerchantInput(slug="shop", name="小店", oa_token=TOKEN))
    reply = await WeChatPusher(client, "shop", TOKEN, "", "").text("o-user", "hi")
    assert (reply.status, reply.error) == (503, "service_unavailable")
    assert bot.messages == []


async def test_changed_credentials_apply_once_the_change_is_announced(
    client: Any, pusher: WeChatPusher, shop: Merchant, bot: Recorder
) -> None:
    assert (await pusher.text("o-user", "a")).status == 200
    await Merchant.filter(id=shop.id).update(oa_token="newtoken1")
    await config_cache.announce(client.app[REDIS])  # what every manager's change through the API does
    assert (await pusher.text("o-user", "b")).status == 403
    renewed = WeChatPusher(client, "shop", "newtoken1", AES_KEY, APPID)
    assert (await renewed.text("o-user", "c", mode="safe")).content == "收到:c"


def test_event_xml_helper_matches_wechat_shape() -> None:
    xml = event_xml("o", "SCAN", event_key="42", ticket="t", create_time=1)
    expected = (
        "<Event><![CDATA[SCAN]]></Event><EventKey><![CDATA[42]]></EventKey><Ticket><![CDATA[t]]></Ticket>"
    )
    assert expected in xml


@pytest.mark.parametrize("mode", MODES)
async def test_help_gets_the_real_help_menu(client: Any, mode: Mode) -> None:
    await create_merchant(DEMO)
    pusher = WeChatPusher(client, DEMO.slug, DEMO.oa_token, DEMO.oa_aes_key, DEMO.oa_appid)
    reply = await pusher.text("oHelpUser0123456789abcdefghi", "帮助", mode=mode)
    assert reply.type == "text"
    assert reply.content.startswith(f"{DEMO.name}会员助手")
    assert "【注册】" in reply.content and "【帮助】" in reply.content


async def test_a_retry_first_handled_by_another_process_gets_an_empty_body(
    client: Any, pusher: WeChatPusher, bot: Recorder
) -> None:
    xml = text_xml("o-user", "hi", msg_id="9000000000000000777", create_time=int(time.time()))
    shop = await Merchant.get(slug=pusher.path.rsplit("/", 1)[1])
    assert await dedup.claim(client.app[REDIS], shop.id, "m:9000000000000000777")  # the other process
    reply = await pusher.push(xml, mode="safe")
    assert (reply.status, reply.empty) == (200, True)
    assert bot.messages == []


async def test_the_answer_book_forgets_old_and_excess_answers() -> None:
    book = dedup.AnswerBook(ttl=60, size=2)
    for key in ("a", "b", "c"):
        book.open(1, key).set_result(TextReply(key))
    assert len(book) == 2
    assert await book.earlier_answer(1, "a", until=time.monotonic()) is None  # evicted: over the size
    assert await book.earlier_answer(1, "c", until=time.monotonic()) == TextReply("c")


async def test_a_leaked_plaintext_url_cannot_carry_another_body(pusher: WeChatPusher, bot: Recorder) -> None:
    stamp, nonce = int(time.time()), "424242"
    first = text_xml("o-user", "hi", msg_id="9000000000000000901", create_time=stamp)
    forged = text_xml("o-victim", "订单", msg_id="9000000000000000902", create_time=stamp)
    assert (await pusher.push(first, mode="plain", timestamp=stamp, nonce=nonce)).status == 200
    retry = await pusher.push(first, mode="plain", timestamp=stamp, nonce=nonce)  # WeChat's own retry
    assert retry.status == 200
    replayed = await pusher.push(forged, mode="plain", timestamp=stamp, nonce=nonce)
    assert replayed.status == 403
    assert [m.openid for m in bot.messages] == ["o-user"]
