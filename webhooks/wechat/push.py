"""Official Account message push: signatures, replay window, safe XML, AES, message and reply mapping.

Pure helpers (no I/O). Signatures are compared in constant time; any DOCTYPE or entity declaration is
refused before anything expands it; wechatpy is used only for its pure parts (parser, replies, AES).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.parsers.expat import ExpatError

import xmltodict
from wechatpy import parse_message
from wechatpy.crypto import PrpCrypto
from wechatpy.events import BaseEvent, SubscribeScanEvent
from wechatpy.exceptions import InvalidAppIdException
from wechatpy.messages import BaseMessage
from wechatpy.replies import ArticlesReply
from wechatpy.replies import ImageReply as WeChatImageReply

from handlers.core.chat import ChatReply, ImageReply, IncomingMessage, NewsReply, TextReply
from handlers.core.errors import DomainError, ErrorCode

WINDOW = TIMESTAMP_WINDOW_SECONDS = 300
MAX_REPLY_ARTICLES = 8  # WeChat shows at most 8 articles in a passive news reply

_DECLARATION = re.compile(r"<!\s*(?:DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)", re.IGNORECASE)
# One leaf element of a flat <xml>: a single CDATA section, or text without markup, references or `]`.
# Neither may hold a control character or a carriage return (the XML parser refuses the one and
# rewrites the other): a message that needs either, or has an attribute, a nested element, a comment or
# a declaration, is not flat and goes to wechatpy.
_FLAT_ITEM = re.compile(
    r"\s*<([A-Za-z][A-Za-z0-9]*)>"
    r"(?:<!\[CDATA\[((?:(?!\]\]>)[^\x00-\x08\x0b\x0c\x0e-\x1f\r])*)\]\]>|([^<&\]\x00-\x08\x0b\x0c\x0e-\x1f\r]*))"
    r"</\1>"
)
# wechatpy renames a scene-carrying subscribe; the bot sees every follow as `subscribe`.
_SUBSCRIBE_ALIASES = frozenset({"subscribe_scan", "subscribe_scan_product"})


def bad_message(message: str) -> DomainError:
    return DomainError(message, code=ErrorCode.BAD_MESSAGE)


def signature(*parts: str) -> str:
    """WeChat's SHA-1 over the lexicographically sorted, concatenated parts."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324 - WeChat's protocol


def verify_signature(given: str, token: str, *parts: str) -> None:
    """Constant-time check of `given` against SHA-1(sort(token, *parts)); 403 bad_signature if it differs."""
    if not token:
        raise DomainError("商户未配置公众号 Token，无法校验签名", code=ErrorCode.BAD_SIGNATURE)
    expected = signature(token, *parts)
    if not hmac.compare_digest(expected.encode(), given.lower().encode()):
        raise DomainError("签名不匹配", code=ErrorCode.BAD_SIGNATURE)


def check_timestamp(timestamp: str, *, now: float | None = None) -> int:
    """The push timestamp, if it lies within five minutes of `now` (either way); else 403 stale_timestamp."""
    current = time.time() if now is None else now
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(int(timestamp) - current) > WINDOW:
        raise DomainError("timestamp 缺失或超出 5 分钟有效期", code=ErrorCode.STALE_TIMESTAMP)
    return int(timestamp)


def refuse_declarations(text: str) -> None:
    """Refuse any DOCTYPE/ENTITY-style declaration before a parser sees the text (billion laughs, external
    entities). WeChat never sends one; xmltodict also refuses entity declarations, as a second guard."""
    if _DECLARATION.search(text):
        raise bad_message("不接受 XML 声明（DOCTYPE、ENTITY）")


def safe_xml(body: bytes | str) -> dict[str, Any]:
    """The children of the <xml> root as xmltodict gives them, declarations refused before parsing."""
    try:
        text = body.decode() if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise bad_message("消息体不是 UTF-8 编码") from exc
    refuse_declarations(text)
    try:
        parsed = xmltodict.parse(text)
    except (ExpatError, ValueError) as exc:
        raise bad_message("消息体不是格式正确的 XML") from exc
    root = parsed.get("xml") if isinstance(parsed, dict) else None
    if not isinstance(root, dict):
        raise bad_message("根节点须为 <xml>")
    return root


def flatten(root: dict[str, Any]) -> dict[str, str]:
    """Leaf texts keyed by path: top-level `Content`; nested `ScanCodeInfo.ScanType`.

    Containers below the top level always carry an index (`SubscribeMsgPopupEvent.List[0].TemplateId`),
    so one item and several items (WeChat's List gotcha) produce the same key shape.
    """
    out: dict[str, str] = {}

    def walk(node: dict[str, Any], prefix: str, depth: int) -> None:
        for tag, value in node.items():
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                if isinstance(item, dict):
                    name = f"{prefix}{tag}[{index}]" if depth > 0 or len(items) > 1 else f"{prefix}{tag}"
                    walk(item, name + ".", depth + 1)
                else:
                    out[f"{prefix}{tag}"] = item or ""

    walk(root, "", 0)
    return out


def _cipher(aes_key: str) -> PrpCrypto:
    try:
        key = base64.b64decode(aes_key + "=", validate=True)
    except ValueError as exc:
        raise DomainError("商户的 EncodingAESKey 无效", code=ErrorCode.FORBIDDEN) from exc
    if len(key) != 32:
        raise DomainError("商户的 EncodingAESKey 无效", code=ErrorCode.FORBIDDEN)
    return PrpCrypto(key)


def decrypt(encrypted: str, aes_key: str, appid: str) -> str:
    """Decrypt a safe-mode `Encrypt` payload; the appid inside must be the merchant's (else 403)."""
    cipher = _cipher(aes_key)
    try:
        return str(cipher.decrypt(encrypted, appid))
    except InvalidAppIdException as exc:
        raise DomainError("消息不属于本公众号", code=ErrorCode.FORBIDDEN) from exc
    except Exception as exc:  # wechatpy surfaces base64, padding and length errors as assorted types
        raise bad_message("加密消息无法解密") from exc


def encrypt_reply(
    xml: str, *, token: str, aes_key: str, appid: str, nonce: str, timestamp: int | None = None
) -> str:
    """Wrap a reply for safe/compatible mode: Encrypt + MsgSignature + TimeStamp + Nonce."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    encrypted = _cipher(aes_key).encrypt(xml, appid).decode()
    return (
        f"<xml>\n<Encrypt><![CDATA[{encrypted}]]></Encrypt>\n"
        f"<MsgSignature><![CDATA[{signature(token, stamp, nonce, encrypted)}]]></MsgSignature>\n"
        f"<TimeStamp>{stamp}</TimeStamp>\n<Nonce><![CDATA[{_cdata(nonce)}]]></Nonce>\n</xml>"
    )


@dataclass(frozen=True, slots=True)
class Push:
    """One parsed push: the bot's view, the dedup key, and who to answer as."""

    message: IncomingMessage
    dedup_key: str
    account: str  # ToUserName: the Official Account's original id (the reply's FromUserName)


def _flat_text(xml: str) -> dict[str, str] | None:
    """A text message's fields as `flatten` gives them (stripped, as xmltodict strips them), read with
    `_FLAT_ITEM` alone; None for any other message or shape (wechatpy then parses it), a repeated tag
    included."""
    text = xml.strip()
    if not (text.startswith("<xml>") and text.endswith("</xml>")):
        return None
    raw: dict[str, str] = {}
    position, end = 5, len(text) - 6
    while (match := _FLAT_ITEM.match(text, position, end)) is not None:
        tag, cdata, plain = match.groups()
        if tag in raw:
            return None
        raw[tag] = (cdata if cdata is not None else plain).strip()
        position = match.end()
    if text[position:end].strip():
        return None
    return raw if raw.get("MsgType") == "text" else None


def parse_push(xml: str) -> Push:
    """Parse a plaintext push once and map it to `IncomingMessage` (400 if it is not one): a flat text
    message (the chat's keywords) with one regular expression, anything else with wechatpy."""
    refuse_declarations(xml)
    raw = _flat_text(xml)
    if raw is not None:
        return _incoming(raw, None)
    try:
        parsed = parse_message(xml)
    except ExpatError as exc:
        raise bad_message("消息体不是格式正确的 XML") from exc
    except Exception as exc:  # wechatpy raises KeyError/ValueError/TypeError on shapes it does not expect
        raise bad_message("无法解析该推送消息") from exc
    data = getattr(parsed, "_data", None)  # the xmltodict dict wechatpy parsed (kept by every message)
    if not isinstance(data, dict):
        raise bad_message("无法解析该推送消息")
    return _incoming(flatten(data), parsed)


def _incoming(raw: dict[str, str], parsed: BaseMessage | None) -> Push:
    openid, kind = raw.get("FromUserName", ""), raw.get("MsgType", "").strip().lower()
    if not openid or not kind:
        raise bad_message("推送消息缺少 FromUserName 或 MsgType")
    create_time = raw.get("CreateTime", "").strip()
    try:
        created_at = datetime.fromtimestamp(int(create_time), UTC) if create_time.isascii() else None
    except (ValueError, OverflowError, OSError):
        created_at = None
    if created_at is None or not create_time.isdigit():
        raise bad_message("推送消息缺少有效的 CreateTime")
    message = to_incoming(parsed, raw, kind, created_at)
    return Push(message=message, dedup_key=dedup_key(message, create_time), account=raw.get("ToUserName", ""))


def to_incoming(
    parsed: BaseMessage | None, raw: dict[str, str], kind: str, created_at: datetime
) -> IncomingMessage:
    event = event_key = ""
    if kind == "event":
        event = str(parsed.event) if isinstance(parsed, BaseEvent) else raw.get("Event", "")
        event = event.strip().lower()
        if event in _SUBSCRIBE_ALIASES:
            event = "subscribe"
        event_key = _event_key(parsed, raw)
    return IncomingMessage(
        openid=raw["FromUserName"],
        kind=kind,
        created_at=created_at,
        content=raw.get("Content", "") if kind == "text" else "",
        event=event,
        event_key=event_key,
        msg_id=(raw.get("MsgId") or raw.get("MsgID") or "").strip(),
        raw=raw,
    )


def _event_key(parsed: BaseMessage, raw: dict[str, str]) -> str:
    """The scene for a QR follow (wechatpy strips `qrscene_`); otherwise EventKey as sent (SCAN, CLICK…)."""
    if parsed is None:  # only text messages are parsed without wechatpy
        return raw.get("EventKey", "")
    if isinstance(parsed, SubscribeScanEvent):
        return str(parsed.scene_id)
    return raw.get("EventKey", "")


def dedup_key(message: IncomingMessage, create_time: str) -> str:
    """MsgId for messages; FromUserName + CreateTime + Event for events (WeChat's documented rule)."""
    if message.kind != "event" and message.msg_id:
        return f"m:{message.msg_id}"
    return f"e:{message.openid}:{create_time}:{message.event or message.kind}"


def _cdata(text: str) -> str:
    """Keep `]]>` inside user-visible text from closing the CDATA section wechatpy writes."""
    return text.replace("]]>", "]]]]><![CDATA[>")


def render_reply(reply: ChatReply | None, *, openid: str, account: str) -> str:
    """The passive-reply XML for a chat reply; "" (WeChat's "nothing to say") for None."""
    if reply is None:
        return ""
    if isinstance(reply, TextReply):  # wechatpy's TextReply layout, without building its reply object
        return (
            f"<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[{_cdata(reply.text)}]]></Content>\n"
            f"<FromUserName><![CDATA[{_cdata(account)}]]></FromUserName>\n"
            f"<ToUserName><![CDATA[{_cdata(openid)}]]></ToUserName>\n<CreateTime>{int(time.time())}</CreateTime>\n</xml>"
        )
    common: dict[str, Any] = {"source": _cdata(account), "target": _cdata(openid), "time": int(time.time())}
    if isinstance(reply, NewsReply):
        articles = [
            {
                "title": _cdata(a.title),
                "description": _cdata(a.description),
                "url": _cdata(a.url),
                "image": _cdata(a.image),
            }
            for a in reply.articles[:MAX_REPLY_ARTICLES]
        ]
        return str(ArticlesReply(articles=articles, **common).render())
    if isinstance(reply, ImageReply):
        return str(WeChatImageReply(media_id=_cdata(reply.media_id), **common).render())
    raise TypeError(f"unsupported reply {type(reply).__name__}")


def mask(openid: str) -> str:
    """An openid shortened for logs (never log it in full)."""
    return f"{openid[: min(6, len(openid) // 3)]}…" if openid else "-"
