"""The pure push helpers: signatures, replay window, safe XML, AES, message mapping, reply rendering."""

from __future__ import annotations

import time
import tracemalloc

import pytest
import xmltodict
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto

from handlers.core.chat import Article, NewsReply, TextReply
from handlers.core.errors import DomainError, ErrorCode
from tests.support.wechat_push import event_xml, parse_reply, text_xml
from webhooks.wechat.push import (
    check_timestamp,
    decrypt,
    dedup_key,
    encrypt_reply,
    flatten,
    parse_push,
    render_reply,
    safe_xml,
    signature,
    to_incoming,
    verify_signature,
)

# WeChat's published message-crypto sample (WXBizMsgCrypt demo, also used by wechatpy and other SDKs).
SAMPLE_TOKEN = "spamtest"
SAMPLE_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SAMPLE_APPID = "wx2c2769f8efd9abc2"
SAMPLE_TIMESTAMP = "1409735669"
SAMPLE_NONCE = "1320562132"
SAMPLE_MSG_SIGNATURE = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
SAMPLE_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2L"
    "dJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6u"
    "x5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJ"
    "pXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCz"
    "pu9GhglF2PE="
)

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
    )
    + "]><xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>"
    "<MsgType>text</MsgType><Content>&lol9;</Content><MsgId>1</MsgId></xml>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>"
    "<MsgType>text</MsgType><Content>&xxe;</Content><MsgId>1</MsgId></xml>"
)


def test_official_sample_signature_and_decryption() -> None:
    assert signature(SAMPLE_TOKEN, SAMPLE_TIMESTAMP, SAMPLE_NONCE, SAMPLE_ENCRYPT) == SAMPLE_MSG_SIGNATURE
    verify_signature(SAMPLE_MSG_SIGNATURE, SAMPLE_TOKEN, SAMPLE_TIMESTAMP, SAMPLE_NONCE, SAMPLE_ENCRYPT)
    push = parse_push(decrypt(SAMPLE_ENCRYPT, SAMPLE_KEY, SAMPLE_APPID))
    assert push.message.kind == "text"
    assert push.message.content == "abcdteT"
    assert push.message.openid == "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
    assert push.message.msg_id == "6054768590064713728"
    assert push.account == "gh_10f6c3c3ac5a"


@pytest.mark.parametrize("tamper", ["nonce", "signature", "token"])
def test_a_changed_signature_input_is_refused(tamper: str) -> None:
    given = "0" * 40 if tamper == "signature" else SAMPLE_MSG_SIGNATURE
    token = "other" if tamper == "token" else SAMPLE_TOKEN
    nonce = "1320562133" if tamper == "nonce" else SAMPLE_NONCE
    with pytest.raises(DomainError) as caught:
        verify_signature(given, token, SAMPLE_TIMESTAMP, nonce, SAMPLE_ENCRYPT)
    assert caught.value.code == ErrorCode.BAD_SIGNATURE


def test_a_merchant_without_token_accepts_no_signature() -> None:
    with pytest.raises(DomainError) as caught:
        verify_signature(signature("", "1", "2"), "", "1", "2")
    assert caught.value.code == ErrorCode.BAD_SIGNATURE


def test_decryption_for_another_appid_is_forbidden() -> None:
    with pytest.raises(DomainError) as caught:
        decrypt(SAMPLE_ENCRYPT, SAMPLE_KEY, "wxsomeoneelse00000")
    assert caught.value.code == ErrorCode.FORBIDDEN


@pytest.mark.parametrize("payload", ["not base64!", "QUJD", SAMPLE_ENCRYPT[:-8] + "AAAAAAA="])
def test_undecryptable_payloads_are_bad_messages(payload: str) -> None:
    with pytest.raises(DomainError) as caught:
        decrypt(payload, SAMPLE_KEY, SAMPLE_APPID)
    assert caught.value.code in (ErrorCode.BAD_MESSAGE, ErrorCode.FORBIDDEN)


def test_encrypted_reply_is_what_wechat_can_verify_and_decrypt() -> None:
    xml = render_reply(TextReply("你好"), openid="o-user", account="gh_x")
    wrapped = encrypt_reply(
        xml, token=SAMPLE_TOKEN, aes_key=SAMPLE_KEY, appid=SAMPLE_APPID, nonce="42", timestamp=1409735669
    )
    envelope = xmltodict.parse(wrapped)["xml"]
    assert envelope["TimeStamp"] == "1409735669" and envelope["Nonce"] == "42"
    crypto = WeChatCrypto(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_APPID)
    plain = crypto.decrypt_message(envelope, envelope["MsgSignature"], "1409735669", "42")
    assert parse_reply(plain).content == "你好"


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(0, True), (299, True), (-299, True), (301, False), (-301, False), (86_400, False)],
)
def test_timestamp_window_is_five_minutes_either_way(offset: int, accepted: bool) -> None:
    now = 1_700_000_000.0
    if accepted:
        assert check_timestamp(str(int(now) + offset), now=now) == int(now) + offset
    else:
        with pytest.raises(DomainError) as caught:
            check_timestamp(str(int(now) + offset), now=now)
        assert caught.value.code == ErrorCode.STALE_TIMESTAMP


@pytest.mark.parametrize("value", ["", "abc", "-5", "1.5", "١٧٠٠٠٠٠٠٠٠"])
def test_non_numeric_timestamps_are_refused(value: str) -> None:
    with pytest.raises(DomainError) as caught:
        check_timestamp(value)
    assert caught.value.code == ErrorCode.STALE_TIMESTAMP


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, EXTERNAL_ENTITY, "<!DOCTYPE xml><xml><a>1</a></xml>"])
def test_declarations_are_refused_before_expansion(xml: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(DomainError) as caught:
            safe_xml(xml.encode())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.code == ErrorCode.BAD_MESSAGE
    assert "DOCTYPE" in caught.value.message
    assert peak < 2_000_000  # a billion laughs expanded would need gigabytes


@pytest.mark.parametrize(
    "xml", [b"<xml><a>1</a>", b"", b"plain text", b"<root><a>1</a></root>", b"\xff\xfe<"]
)
def test_malformed_bodies_are_bad_messages(xml: bytes) -> None:
    with pytest.raises(DomainError) as caught:
        safe_xml(xml)
    assert caught.value.code == ErrorCode.BAD_MESSAGE


def test_flatten_gives_one_key_shape_for_one_or_many_list_items() -> None:
    item = "<List><TemplateId>{}</TemplateId><SubscribeStatusString>accept</SubscribeStatusString></List>"
    one = flatten(safe_xml(f"<xml><E>{item.format('t1')}</E></xml>"))
    two = flatten(safe_xml(f"<xml><E>{item.format('t1')}{item.format('t2')}</E></xml>"))
    assert one == {"E.List[0].TemplateId": "t1", "E.List[0].SubscribeStatusString": "accept"}
    assert two["E.List[0].TemplateId"] == "t1" and two["E.List[1].TemplateId"] == "t2"


def _event(event: str, key: str = "", **extra: str) -> str:
    return event_xml("o-user", event, event_key=key, create_time=1_700_000_000, **extra)


@pytest.mark.parametrize(
    ("xml", "event", "key"),
    [
        (_event("subscribe", "qrscene_staff42", ticket="gQH47joAAAAAAAAAASxodHRw"), "subscribe", "staff42"),
        (_event("subscribe"), "subscribe", ""),
        (_event("SCAN", "staff42", ticket="gQH47joAAAAAAAAAASxodHRw"), "scan", "staff42"),
        (_event("CLICK", "MENU_CARD"), "click", "MENU_CARD"),
        (_event("VIEW", "https://example.com/card"), "view", "https://example.com/card"),
        (_event("unsubscribe"), "unsubscribe", ""),
        (_event("LOCATION", extra="<Latitude>31.2</Latitude><Longitude>121.4</Longitude>"), "location", ""),
        (
            _event(
                "TEMPLATESENDJOBFINISH", extra="<MsgID>200163836</MsgID><Status>failed:freq limit</Status>"
            ),
            "templatesendjobfinish",
            "",
        ),
        (_event("subscribe_msg_popup_event"), "subscribe_msg_popup_event", ""),
        (_event("some_future_event", "k"), "some_future_event", "k"),
    ],
)
def test_events_map_to_lower_case_names_and_keys(xml: str, event: str, key: str) -> None:
    push = parse_push(xml)
    assert (push.message.kind, push.message.event, push.message.event_key) == ("event", event, key)
    assert push.message.openid == "o-user"
    assert push.message.created_at.timestamp() == 1_700_000_000


def test_unknown_message_types_still_parse() -> None:
    xml = text_xml("o-user", "x", msg_id="7", create_time=1).replace("[text]", "[hologram]")
    push = parse_push(xml)
    assert push.message.kind == "hologram" and push.message.content == ""
    assert push.dedup_key == "m:7"


@pytest.mark.parametrize(
    "xml",
    [
        "<xml><FromUserName>o</FromUserName><CreateTime>1</CreateTime></xml>",
        "<xml><MsgType>text</MsgType><CreateTime>1</CreateTime></xml>",
        "<xml><FromUserName>o</FromUserName><MsgType>text</MsgType><CreateTime>soon</CreateTime></xml>",
    ],
)
def test_pushes_missing_required_fields_are_bad_messages(xml: str) -> None:
    with pytest.raises(DomainError) as caught:
        parse_push(xml)
    assert caught.value.code == ErrorCode.BAD_MESSAGE


def test_dedup_keys_follow_wechat_rules() -> None:
    assert parse_push(text_xml("o", "hi", msg_id="123", create_time=5)).dedup_key == "m:123"
    event = parse_push(_event("CLICK", "K"))
    assert event.dedup_key == "e:o-user:1700000000:click"
    assert parse_push(_event("VIEW", "K")).dedup_key != event.dedup_key


def test_text_reply_renders_and_survives_cdata_terminators() -> None:
    xml = render_reply(TextReply("a]]>b <c> & 中文"), openid="o-user", account="gh_x")
    reply = parse_reply(xml)
    assert (reply.type, reply.content, reply.to_user, reply.from_user) == (
        "text",
        "a]]>b <c> & 中文",
        "o-user",
        "gh_x",
    )
    assert abs(int(xmltodict.parse(xml)["xml"]["CreateTime"]) - time.time()) < 5


def test_news_reply_renders_articles() -> None:
    articles = tuple(
        Article(f"标题{i}", "说明", f"https://e.com/{i}", "https://e.com/p.png") for i in range(10)
    )
    reply = parse_reply(render_reply(NewsReply(articles), openid="o", account="gh"))
    assert reply.type == "news"
    assert len(reply.articles) == 8
    assert reply.articles[0] == {
        "title": "标题0",
        "description": "说明",
        "url": "https://e.com/0",
        "image": "https://e.com/p.png",
    }


def test_no_reply_renders_an_empty_body() -> None:
    assert render_reply(None, openid="o", account="gh") == ""


@pytest.mark.parametrize("stamp", ["99999999999999999999", "-5", "12a"])
def test_an_impossible_create_time_is_a_bad_message(stamp: str) -> None:
    xml = (
        f"<xml><ToUserName>gh</ToUserName><FromUserName>o-user</FromUserName>"
        f"<CreateTime>{stamp}</CreateTime><MsgType>text</MsgType><Content>hi</Content><MsgId>1</MsgId></xml>"
    )
    with pytest.raises(DomainError) as caught:
        parse_push(xml)
    assert caught.value.code == ErrorCode.BAD_MESSAGE


_TEXT_SHAPES = [
    "<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName>"
    "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    "<Content><![CDATA[ 帮助 ]]></Content><MsgId>123</MsgId></xml>",
    "\n<xml>\n <ToUserName>gh</ToUserName>\n <FromUserName><![CDATA[o1]]></FromUserName>\n"
    " <CreateTime>1700000000</CreateTime>\n <MsgType><![CDATA[text]]></MsgType>\n"
    " <Content><![CDATA[a<b>&amp;c</Content>]]></Content>\n <MsgId>123</MsgId>\n</xml>\n",
    "<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>1700000000</CreateTime>"
    "<MsgType>text</MsgType><Content></Content><MsgId>1</MsgId></xml>",
    # Shapes the regular expression leaves to wechatpy: a reference, a split CDATA, a carriage return,
    # a repeated tag, an attribute, a nested element, an event.
    "<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>1700000000</CreateTime>"
    "<MsgType>text</MsgType><Content>a &amp; b &#x4e2d;</Content><MsgId>1</MsgId></xml>",
    "<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>1700000000</CreateTime>"
    "<MsgType>text</MsgType><Content><![CDATA[a]]]]><![CDATA[>b]]></Content><MsgId>1</MsgId></xml>",
    "<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>1700000000</CreateTime>"
    "<MsgType>text</MsgType><Content><![CDATA[one\r\ntwo]]></Content><MsgId>1</MsgId></xml>",
    "<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><FromUserName>o2</FromUserName>"
    "<CreateTime>1700000000</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId></xml>",
    "<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>1700000000</CreateTime>"
    '<MsgType>text</MsgType><Content a="1">x</Content><MsgId>1</MsgId></xml>',
    "<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>1700000000</CreateTime>"
    "<MsgType>text</MsgType><Content><b>x</b></Content><MsgId>1</MsgId></xml>",
    _event("CLICK", "K"),
]


@pytest.mark.parametrize("xml", _TEXT_SHAPES)
def test_text_messages_parse_as_wechatpy_parses_them(xml: str) -> None:
    """A flat text message is read without wechatpy; every shape maps to what wechatpy's parse gives."""
    ours = parse_push(xml)
    theirs = to_incoming(
        parse_message(xml), flatten(parse_message(xml)._data), ours.message.kind, ours.message.created_at
    )
    assert ours.message == theirs
    assert ours.message.raw == theirs.raw
    assert ours.dedup_key == dedup_key(theirs, flatten(parse_message(xml)._data)["CreateTime"])
