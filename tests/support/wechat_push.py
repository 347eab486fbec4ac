"""Build WeChat-signed Official Account pushes and read the webhook's replies, for tests.

    pusher = WeChatPusher(client, "demo", "memberbotdemo", DEMO.oa_aes_key, "wxdemo0000000000a")
    reply = await pusher.text("o-user-1", "帮助", mode="safe")
    assert reply.type == "text" and "帮助" in reply.content

Modes are WeChat's: "plain" (明文), "compat" (兼容: plaintext and ciphertext in one body) and "safe"
(安全: ciphertext only). Encrypted replies are checked (MsgSignature) and decrypted with wechatpy itself,
independently of the code under test. Each text gets a fresh MsgId and each event a fresh CreateTime
unless given, so two calls are two pushes; pass the same `msg_id` / `create_time` to simulate a retry.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import xmltodict
from wechatpy.crypto import WeChatCrypto

Mode = Literal["plain", "compat", "safe"]
DEFAULT_ACCOUNT = "gh_0123456789ab"


@dataclass(frozen=True, slots=True)
class ParsedReply:
    """The webhook's answer: `type` is "text", "news", "image", … or "" for an empty body; `error` for a
    refusal."""

    status: int
    type: str = ""
    content: str = ""
    articles: tuple[dict[str, str], ...] = ()
    media_id: str = ""  # an image reply's
    to_user: str = ""
    from_user: str = ""
    error: str = ""  # the error code of a JSON error answer
    body: str = field(default="", repr=False)  # the decrypted reply XML (or the raw body)

    @property
    def empty(self) -> bool:
        return self.status == 200 and not self.type


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324 - WeChat's protocol


def cdata(name: str, value: str) -> str:
    return f"<{name}><![CDATA[{value}]]></{name}>"


def text_xml(
    openid: str, content: str, *, msg_id: str, create_time: int, account: str = DEFAULT_ACCOUNT
) -> str:
    return (
        f"<xml>{cdata('ToUserName', account)}{cdata('FromUserName', openid)}"
        f"<CreateTime>{create_time}</CreateTime>{cdata('MsgType', 'text')}{cdata('Content', content)}"
        f"<MsgId>{msg_id}</MsgId></xml>"
    )


def event_xml(
    openid: str,
    event: str,
    *,
    event_key: str = "",
    create_time: int,
    ticket: str = "",
    extra: str = "",
    account: str = DEFAULT_ACCOUNT,
) -> str:
    """An event push; `extra` is appended verbatim (e.g. `<Latitude>…</Latitude>`)."""
    key = cdata("EventKey", event_key) if event_key else ""
    tick = cdata("Ticket", ticket) if ticket else ""
    return (
        f"<xml>{cdata('ToUserName', account)}{cdata('FromUserName', openid)}"
        f"<CreateTime>{create_time}</CreateTime>{cdata('MsgType', 'event')}{cdata('Event', event)}"
        f"{key}{tick}{extra}</xml>"
    )


class WeChatPusher:
    """Posts signed pushes for one merchant through an aiohttp test client."""

    def __init__(
        self,
        client: Any,
        merchant_slug: str,
        token: str,
        aes_key: str,
        appid: str,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self.client = client
        self.path = f"/wechat/{merchant_slug}"
        self.token = token
        self.appid = appid
        self.account = account
        self.crypto = WeChatCrypto(token, aes_key, appid) if aes_key else None
        self._last_create_time = 0

    def next_create_time(self) -> int:
        """Now, or one second after the last push if that is later: distinct events, same user."""
        self._last_create_time = max(int(time.time()), self._last_create_time + 1)
        return self._last_create_time

    async def text(
        self,
        openid: str,
        content: str,
        mode: Mode = "plain",
        msg_id: str | None = None,
        create_time: int | None = None,
    ) -> ParsedReply:
        xml = text_xml(
            openid,
            escape_cdata(content),
            msg_id=msg_id or str(secrets.randbits(63)),
            create_time=create_time or self.next_create_time(),
            account=self.account,
        )
        return await self.push(xml, mode=mode, openid=openid)

    async def event(
        self,
        openid: str,
        event: str,
        event_key: str = "",
        mode: Mode = "plain",
        *,
        ticket: str = "",
        create_time: int | None = None,
        extra: str = "",
    ) -> ParsedReply:
        xml = event_xml(
            openid,
            event,
            event_key=event_key,
            ticket=ticket,
            extra=extra,
            create_time=create_time or self.next_create_time(),
            account=self.account,
        )
        return await self.push(xml, mode=mode, openid=openid)

    async def push(
        self,
        xml: str,
        mode: Mode = "plain",
        *,
        openid: str = "",
        timestamp: int | None = None,
        nonce: str | None = None,
    ) -> ParsedReply:
        """Sign and post any plaintext push XML in `mode`; returns the decoded reply."""
        stamp, once = str(timestamp or int(time.time())), nonce or str(secrets.randbelow(10**9))
        query, body = self.signed(xml, mode, timestamp=stamp, nonce=once, openid=openid)
        response = await self.client.post(
            self.path, params=query, data=body.encode(), headers={"Content-Type": "text/xml"}
        )
        return await self.read_reply(response, encrypted=mode != "plain", nonce=once)

    def signed(
        self, xml: str, mode: Mode, *, timestamp: str, nonce: str, openid: str = ""
    ) -> tuple[dict[str, str], str]:
        """The query string and body WeChat would send for `xml` in `mode`."""
        query = {"signature": sign(self.token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
        if openid:
            query["openid"] = openid
        if mode == "plain":
            return query, xml
        encrypted = self.encrypt(xml, timestamp=timestamp, nonce=nonce)
        query.update(encrypt_type="aes", msg_signature=sign(self.token, timestamp, nonce, encrypted))
        if mode == "safe":
            return query, f"<xml>{cdata('ToUserName', self.account)}{cdata('Encrypt', encrypted)}</xml>"
        return query, xml.replace("</xml>", f"{cdata('Encrypt', encrypted)}</xml>")

    def encrypt(self, xml: str, *, timestamp: str, nonce: str) -> str:
        assert self.crypto is not None, "this pusher has no AES key"
        envelope = xmltodict.parse(self.crypto.encrypt_message(xml, nonce, timestamp))["xml"]
        return str(envelope["Encrypt"])

    async def read_reply(self, response: Any, *, encrypted: bool, nonce: str) -> ParsedReply:
        text = await response.text()
        if response.status != 200:
            error = ""
            if response.content_type == "application/json":
                error = (await response.json())["error"]["code"]
            return ParsedReply(status=response.status, error=error, body=text)
        if text in ("", "success"):
            return ParsedReply(status=200, body=text)
        if encrypted:
            text = self.decrypt_reply(text)
        return parse_reply(text)

    def decrypt_reply(self, text: str) -> str:
        """Check the encrypted reply's MsgSignature and decrypt it (raises if either is wrong)."""
        assert self.crypto is not None, "this pusher has no AES key"
        envelope = xmltodict.parse(text)["xml"]
        expected = sign(self.token, envelope["TimeStamp"], envelope["Nonce"], envelope["Encrypt"])
        assert envelope["MsgSignature"] == expected, "reply MsgSignature does not match"
        return str(
            self.crypto.decrypt_message(
                envelope, envelope["MsgSignature"], envelope["TimeStamp"], envelope["Nonce"]
            )
        )


def parse_reply(xml: str) -> ParsedReply:
    data = xmltodict.parse(xml)["xml"]
    articles: tuple[dict[str, str], ...] = ()
    if data.get("Articles"):
        items = data["Articles"]["item"]
        items = items if isinstance(items, list) else [items]
        articles = tuple(
            {
                "title": i.get("Title") or "",
                "description": i.get("Description") or "",
                "url": i.get("Url") or "",
                "image": i.get("PicUrl") or "",
            }
            for i in items
        )
    return ParsedReply(
        status=200,
        type=data.get("MsgType", ""),
        content=data.get("Content") or "",
        articles=articles,
        media_id=(data.get("Image") or {}).get("MediaId") or "",
        to_user=data.get("ToUserName", ""),
        from_user=data.get("FromUserName", ""),
        body=xml,
    )


def escape_cdata(text: str) -> str:
    """Text as WeChat would put it in CDATA (a literal `]]>` split across two sections)."""
    return text.replace("]]>", "]]]]><![CDATA[>")


__all__ = ["Mode", "ParsedReply", "WeChatPusher", "event_xml", "parse_reply", "sign", "text_xml"]
