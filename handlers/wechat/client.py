"""Async client for the WeChat endpoints memberbot calls (aiohttp; wechatpy is used only for its pure parts).

Access tokens come from `stable_token` in normal mode (never `force_refresh`), cached in Redis under
`wx:token:<appid>` until five minutes before expiry and shared by every process; each process keeps its
copy for up to a minute (never past the cache's expiry). Concurrent callers in one process share one
read of the cache and one fetch; across processes a short Redis lock lets one fetch while the others
re-read the cache.
A call answered with an invalid/expired token drops the cached token, re-fetches once and retries once.
Tokens, secrets and session keys are never logged.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from aiohttp import ClientSession
from redis.asyncio import Redis

from handlers.core.chat import Article
from handlers.wechat.errors import (
    DuplicateClientMsgId,
    InvalidAccessToken,
    NoMenu,
    WeChatNotConfigured,
    WeChatRequestInvalid,
    WeChatUnavailable,
    error_for,
)

log = logging.getLogger(__name__)

WECHAT_API_ROOT = "https://api.weixin.qq.com"
SHOWQRCODE_URL = "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket="
TOKEN_MARGIN_SECONDS = 300
MEMO_SECONDS = 60  # a process reuses the shared token this long without asking Redis (a Redis read a call)
LOCK_MS = 5000
QR_MAX_EXPIRE_SECONDS = 2_592_000
IMAGE_MAX_BYTES = 10 * 1024 * 1024  # media/upload, type image (PNG, JPEG, GIF)
IMAGE_TYPES = {
    b"\x89PNG": ("image/png", "png"),
    b"\xff\xd8\xff": ("image/jpeg", "jpg"),
    b"GIF8": ("image/gif", "gif"),
}
TEMPLATE_VALUE_MAX = 20
CLIENT_MSG_ID_MAX_BYTES = 64
MASS_MIN_OPENIDS, MASS_MAX_OPENIDS = 2, 10_000
WXACODE_SCENE = re.compile(r"[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]{1,32}")
SUBSCRIBE_STATES = ("developer", "trial", "formal")
SUBSCRIBE_LANGS = ("zh_CN", "en_US", "zh_HK", "zh_TW")
TAG_NAME_MAX = 30  # characters (WeChat: 45158 beyond)
TAG_BATCH_MAX = 50  # openids per batchtagging / batchuntagging call (40032 beyond)
WXACODE_ENVS = ("release", "trial", "develop")
_RELEASE_IF_OWNER = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


@dataclass(frozen=True, slots=True)
class AppCredentials:
    appid: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class WeChatTag:
    id: int
    name: str
    count: int


@dataclass(frozen=True, slots=True)
class QrTicket:
    """An Official Account QR code. `url` is its content; `image_url` its picture on WeChat's server;
    `expire_seconds` is None for a permanent code."""

    ticket: str
    url: str
    expire_seconds: int | None

    @property
    def image_url(self) -> str:
        return SHOWQRCODE_URL + quote(self.ticket, safe="")


@dataclass(frozen=True, slots=True)
class MpSession:
    openid: str
    session_key: str = field(repr=False)
    unionid: str | None = None


class HasApps(Protocol):
    """A merchant, or what a caller read of one: its Official Account and mini-program credentials."""

    @property
    def oa_appid(self) -> str: ...
    @property
    def oa_secret(self) -> str: ...
    @property
    def mp_appid(self) -> str: ...
    @property
    def mp_secret(self) -> str: ...


def oa_credentials(merchant: HasApps) -> AppCredentials:
    """The merchant's Official Account credentials, or `WeChatNotConfigured`."""
    if not merchant.oa_appid or not merchant.oa_secret:
        raise WeChatNotConfigured("商户未配置公众号（oa_appid 与 oa_secret）", field="oa_appid")
    return AppCredentials(merchant.oa_appid, merchant.oa_secret)


def mp_credentials(merchant: HasApps) -> AppCredentials:
    """The merchant's mini-program credentials, or `WeChatNotConfigured`."""
    if not merchant.mp_appid or not merchant.mp_secret:
        raise WeChatNotConfigured("商户未配置小程序（mp_appid 与 mp_secret）", field="mp_appid")
    return AppCredentials(merchant.mp_appid, merchant.mp_secret)


def _token_key(appid: str) -> str:
    return f"wx:token:{appid}"


def _lock_key(appid: str) -> str:
    return f"wx:token-lock:{appid}"


async def _delete_if(redis: Redis, key: str, value: str) -> None:
    """Delete `key` only while it still holds `value` (atomically)."""
    await redis.eval(_RELEASE_IF_OWNER, 1, key, value)  # type: ignore[misc]  # redis-py's union return type


def _wrap_data(data: Mapping[str, str], *, field_name: str) -> dict[str, dict[str, str]]:
    if not data:
        raise WeChatRequestInvalid(f"{field_name} 至少需要一项", field=field_name)
    for key, value in data.items():
        if not isinstance(value, str):
            raise WeChatRequestInvalid(f"{field_name}.{key} 须为字符串", field=field_name)
    return {key: {"value": value} for key, value in data.items()}


class WeChatClient:
    def __init__(self, session: ClientSession, redis: Redis, api_base: str) -> None:
        self.session = session
        self.redis = redis
        self.api_base = api_base.rstrip("/")
        self._fetching: dict[str, asyncio.Lock] = {}
        self._memo: dict[str, tuple[str, float]] = {}  # appid → (token, loop time it is kept until)

    # -- access tokens -------------------------------------------------------------------------------------

    async def access_token(self, app: AppCredentials) -> str:
        """A valid access token for `app`: this process's copy for up to MEMO_SECONDS (never past the
        shared cache's expiry), else the shared cache, else one `stable_token` fetch."""
        loop = asyncio.get_running_loop()
        memo = self._memo.get(app.appid)
        if memo is not None and memo[1] > loop.time():
            return memo[0]
        async with self._fetching.setdefault(app.appid, asyncio.Lock()):  # one reader; the others wait
            memo = self._memo.get(app.appid)
            if memo is not None and memo[1] > loop.time():
                return memo[0]
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(_token_key(app.appid))
                pipe.pttl(_token_key(app.appid))
                cached, ttl_ms = await pipe.execute()
            if cached:
                token = bytes(cached).decode()
                self._memo[app.appid] = (token, loop.time() + min(MEMO_SECONDS, max(int(ttl_ms), 0) / 1000))
                return token
            return await self._fetch_across_processes(app)

    async def _fetch_across_processes(self, app: AppCredentials) -> str:
        owner = secrets.token_hex(8)
        deadline = asyncio.get_running_loop().time() + LOCK_MS / 1000
        while True:
            if await self.redis.set(_lock_key(app.appid), owner, nx=True, px=LOCK_MS):
                try:
                    return await self._fetch_token(app)
                finally:
                    await _delete_if(self.redis, _lock_key(app.appid), owner)
            await asyncio.sleep(0.02)
            cached = await self.redis.get(_token_key(app.appid))
            if cached:
                return bytes(cached).decode()
            if asyncio.get_running_loop().time() > deadline:
                # The holder is stuck; stable_token in normal mode is safe to call concurrently.
                return await self._fetch_token(app)

    async def _fetch_token(self, app: AppCredentials) -> str:
        body = {
            "grant_type": "client_credential",
            "appid": app.appid,
            "secret": app.secret,
            "force_refresh": False,
        }
        answer = await self._json("POST", "/cgi-bin/stable_token", json_body=body)
        token, expires_in = answer.get("access_token"), answer.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int):
            raise WeChatUnavailable(-1, "stable_token answered without a token")
        ttl = expires_in - TOKEN_MARGIN_SECONDS if expires_in > TOKEN_MARGIN_SECONDS else expires_in // 2
        if ttl > 0:
            await self.redis.set(_token_key(app.appid), token, ex=ttl)
            self._memo[app.appid] = (token, asyncio.get_running_loop().time() + min(MEMO_SECONDS, ttl))
        log.info("wechat access token fetched", extra={"appid": app.appid, "expires_in": expires_in})
        return token

    async def _drop_token(self, appid: str, token: str) -> None:
        """Forget `token` unless another caller already replaced it with a fresh one."""
        if self._memo.get(appid, ("", 0.0))[0] == token:
            del self._memo[appid]
        await _delete_if(self.redis, _token_key(appid), token)

    # -- transport -----------------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        form: aiohttp.FormData | None = None,
    ) -> tuple[str, bytes]:
        data: bytes | aiohttp.FormData | None = form
        headers = {}
        if json_body is not None:
            data = json.dumps(json_body, ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json; charset=utf-8"}
        try:
            async with self.session.request(
                method, self.api_base + path, params=params, data=data, headers=headers
            ) as response:
                payload = await response.read()
                if response.status >= 500:
                    raise WeChatUnavailable(-1, f"HTTP {response.status} from {path}")
                return response.headers.get("Content-Type", ""), payload
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The exception text may carry the URL (and its access_token), so only its type is kept.
            raise WeChatUnavailable(-1, f"{path} unreachable ({type(exc).__name__})") from None

    @staticmethod
    def _decode(path: str, payload: bytes) -> dict[str, Any]:
        try:
            answer = json.loads(payload)
        except ValueError:
            raise WeChatUnavailable(-1, f"{path} answered with something that is not JSON") from None
        if not isinstance(answer, dict):
            raise WeChatUnavailable(-1, f"{path} answered with unexpected JSON")
        errcode = answer.get("errcode", 0)
        if errcode:
            errmsg = str(answer.get("errmsg", ""))
            if errcode == DuplicateClientMsgId.errcodes[0]:
                msgid = answer.get("msgid", answer.get("msg_id"))  # template: msgid; mass: msg_id
                raise DuplicateClientMsgId(errcode, errmsg, msgid if isinstance(msgid, int) else None)
            raise error_for(int(errcode), errmsg)
        return answer

    async def _json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        _, payload = await self._send(method, path, params=params, json_body=json_body)
        return self._decode(path, payload)

    async def _call(
        self,
        app: AppCredentials,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        params: Mapping[str, str] | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
    ) -> tuple[str, bytes]:
        """POST `body` or a multipart `form()` (GET with `params` when there is neither) with the app's
        token; one re-fetch and one retry on an invalid/expired token."""
        for attempt in (1, 2):
            token = await self.access_token(app)
            content_type, payload = await self._send(
                "POST" if body is not None or form is not None else "GET",
                path,
                params={**(params or {}), "access_token": token},
                json_body=body,
                form=form() if form is not None else None,  # a form body is read once: one per attempt
            )
            if not _looks_like_json(content_type, payload):
                return content_type, payload
            try:
                self._decode(path, payload)
            except InvalidAccessToken:
                if attempt == 2:
                    raise
                log.warning("wechat access token rejected, fetching again", extra={"appid": app.appid})
                await self._drop_token(app.appid, token)
                continue
            return content_type, payload
        raise AssertionError("unreachable")

    async def _call_json(self, app: AppCredentials, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """`_call` for a JSON answer, decoded once (a notice's send is the hot path)."""
        for attempt in (1, 2):
            token = await self.access_token(app)
            _, payload = await self._send("POST", path, params={"access_token": token}, json_body=body)
            try:
                return self._decode(path, payload)
            except InvalidAccessToken:
                if attempt == 2:
                    raise
                log.warning("wechat access token rejected, fetching again", extra={"appid": app.appid})
                await self._drop_token(app.appid, token)
        raise AssertionError("unreachable")

    # -- Official Account ----------------------------------------------------------------------------------

    async def user_unionid(self, app: AppCredentials, openid: str) -> str | None:
        """The follower's unionid (`cgi-bin/user/info`), or None when the account has no Open Platform
        binding (WeChat then sends none)."""
        query = {"openid": openid, "lang": "zh_CN"}
        _, payload = await self._call(app, "/cgi-bin/user/info", None, params=query)
        unionid = self._decode("/cgi-bin/user/info", payload).get("unionid")
        return unionid if isinstance(unionid, str) and unionid else None

    async def send_custom_text(self, app: AppCredentials, openid: str, text: str) -> None:
        if not text:
            raise WeChatRequestInvalid("text 不能为空", field="text")
        body = {"touser": openid, "msgtype": "text", "text": {"content": text}}
        await self._call_json(app, "/cgi-bin/message/custom/send", body)

    async def send_custom_news(self, app: AppCredentials, openid: str, articles: Sequence[Article]) -> None:
        """A customer-service news message: WeChat now allows exactly one article."""
        if len(articles) != 1:
            raise WeChatRequestInvalid("articles 须恰好包含一篇图文（微信只允许一篇）", field="articles")
        article = articles[0]
        item = {
            "title": article.title,
            "description": article.description,
            "url": article.url,
            "picurl": article.image,
        }
        body = {"touser": openid, "msgtype": "news", "news": {"articles": [item]}}
        await self._call_json(app, "/cgi-bin/message/custom/send", body)

    async def send_custom_image(self, app: AppCredentials, openid: str, media_id: str) -> None:
        """A customer-service image message showing an uploaded image (`upload_image`'s media_id)."""
        if not media_id:
            raise WeChatRequestInvalid("media_id 不能为空", field="media_id")
        body = {"touser": openid, "msgtype": "image", "image": {"media_id": media_id}}
        await self._call_json(app, "/cgi-bin/message/custom/send", body)

    async def upload_image(self, app: AppCredentials, image: bytes, *, name: str = "image") -> str:
        """Upload temporary image media (`media/upload`; WeChat keeps it 3 days) and return its media_id."""
        kind = next((known for magic, known in IMAGE_TYPES.items() if image.startswith(magic)), None)
        if kind is None:
            raise WeChatRequestInvalid("图片须为 PNG、JPEG 或 GIF 格式", field="image")
        if len(image) > IMAGE_MAX_BYTES:
            raise WeChatRequestInvalid("图片不能超过 10 MB", field="image")
        content_type, extension = kind

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            media = io.BytesIO(image)  # a stream: aiohttp warns about large raw bodies
            data.add_field("media", media, filename=f"{name}.{extension}", content_type=content_type)
            return data

        path = "/cgi-bin/media/upload"
        _, payload = await self._call(app, path, None, params={"type": "image"}, form=form)
        media_id = self._decode(path, payload).get("media_id")
        if not isinstance(media_id, str) or not media_id:
            raise WeChatUnavailable(-1, "media/upload answered without a media_id")
        return media_id

    async def send_template(
        self,
        app: AppCredentials,
        openid: str,
        template_id: str,
        data: Mapping[str, str],
        *,
        url: str | None = None,
        miniprogram: tuple[str, str] | None = None,
        client_msg_id: str,
    ) -> int:
        """Send a template message (2023 rules: values ≤ 20 characters, no line breaks) and return its msgid.

        A repeated `client_msg_id` within 10 minutes raises `DuplicateClientMsgId` (with the original msgid
        when WeChat gives it): the message was already sent.
        """
        if not client_msg_id or len(client_msg_id.encode()) > CLIENT_MSG_ID_MAX_BYTES:
            raise WeChatRequestInvalid("client_msg_id 须为 1–64 字节", field="client_msg_id")
        for key, value in data.items():
            if isinstance(value, str) and (len(value) > TEMPLATE_VALUE_MAX or "\n" in value or "\r" in value):
                raise WeChatRequestInvalid(
                    f"data.{key} 最多 {TEMPLATE_VALUE_MAX} 个字符，且不能换行", field="data"
                )
        body: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "client_msg_id": client_msg_id,
            "data": _wrap_data(data, field_name="data"),
        }
        if url:
            body["url"] = url
        if miniprogram is not None:
            body["miniprogram"] = {"appid": miniprogram[0], "pagepath": miniprogram[1]}
        answer = await self._call_json(app, "/cgi-bin/message/template/send", body)
        msgid = answer.get("msgid")
        if not isinstance(msgid, int):
            raise WeChatUnavailable(-1, "template/send answered without a msgid")
        return msgid

    async def create_qrcode(self, app: AppCredentials, scene: str, expire_seconds: int | None) -> QrTicket:
        """A string-scene QR code: temporary (`QR_STR_SCENE`, up to 30 days) or, with `expire_seconds`
        None, permanent (`QR_LIMIT_STR_SCENE`; at most 100,000 per account, then `QrCodeLimitReached`)."""
        if not 1 <= len(scene) <= 64:
            raise WeChatRequestInvalid("scene 须为 1–64 个字符", field="scene")
        body: dict[str, Any] = {"action_info": {"scene": {"scene_str": scene}}}
        if expire_seconds is None:
            body["action_name"] = "QR_LIMIT_STR_SCENE"
        elif 1 <= expire_seconds <= QR_MAX_EXPIRE_SECONDS:
            body = {"expire_seconds": expire_seconds, "action_name": "QR_STR_SCENE", **body}
        else:
            raise WeChatRequestInvalid(
                f"expire_seconds 须在 1 到 {QR_MAX_EXPIRE_SECONDS} 秒之间（最长 30 天）",
                field="expire_seconds",
            )
        answer = await self._call_json(app, "/cgi-bin/qrcode/create", body)
        ticket, url = answer.get("ticket"), answer.get("url")
        if not isinstance(ticket, str) or not ticket or not isinstance(url, str) or not url:
            raise WeChatUnavailable(-1, "qrcode/create answered without a ticket")
        if expire_seconds is None:
            return QrTicket(ticket=ticket, url=url, expire_seconds=None)
        return QrTicket(
            ticket=ticket, url=url, expire_seconds=int(answer.get("expire_seconds", expire_seconds))
        )

    def showqrcode_url(self, ticket: str) -> str:
        """Where a QR ticket's picture is fetched: WeChat's showqrcode, or the simulator's own."""
        if self.api_base == WECHAT_API_ROOT:
            return SHOWQRCODE_URL + quote(ticket, safe="")
        return f"{self.api_base}/cgi-bin/showqrcode?ticket={quote(ticket, safe='')}"

    async def create_menu(self, app: AppCredentials, menu: Mapping[str, Any]) -> None:
        """Replace the account's custom menu (`menu/create`; validate it with `handlers.rules.menu`
        first). WeChat's refusals raise `InvalidMenu` naming what it disliked."""
        if not isinstance(menu.get("button"), list) or not menu["button"]:
            raise WeChatRequestInvalid("button 须为非空的按钮数组", field="button")
        await self._call_json(app, "/cgi-bin/menu/create", menu)

    async def get_menu(self, app: AppCredentials) -> dict[str, Any] | None:
        """The account's custom menu as WeChat has it (`menu/get`: `{"button": [...]}`, leaves with
        an empty `sub_button`), or None when it has none (46003)."""
        try:
            _, payload = await self._call(app, "/cgi-bin/menu/get", None)  # decodes the errcode too
        except NoMenu:
            return None
        menu = self._decode("/cgi-bin/menu/get", payload).get("menu")
        if not isinstance(menu, dict):
            raise WeChatUnavailable(-1, "menu/get answered without a menu")
        return menu

    # -- user tags (用户标签管理) ---------------------------------------------------------------------------

    async def create_tag(self, app: AppCredentials, name: str) -> int:
        """A new user tag's id (`tags/create`); 45157 name exists, 45056 the account has 100 tags."""
        if not 1 <= len(name) <= TAG_NAME_MAX:
            raise WeChatRequestInvalid(f"标签名 name 须为 1–{TAG_NAME_MAX} 个字符", field="name")
        tag = (await self._call_json(app, "/cgi-bin/tags/create", {"tag": {"name": name}})).get("tag")
        if not isinstance(tag, dict) or not isinstance(tag.get("id"), int):
            raise WeChatUnavailable(-1, "tags/create answered without a tag id")
        return int(tag["id"])

    async def list_tags(self, app: AppCredentials) -> list[WeChatTag]:
        """The account's user tags (`tags/get`) with their follower counts."""
        _, payload = await self._call(app, "/cgi-bin/tags/get", None)
        tags = self._decode("/cgi-bin/tags/get", payload).get("tags") or []
        return [WeChatTag(int(t["id"]), str(t["name"]), int(t.get("count", 0))) for t in tags]

    async def update_tag(self, app: AppCredentials, tag_id: int, name: str) -> None:
        if not 1 <= len(name) <= TAG_NAME_MAX:
            raise WeChatRequestInvalid(f"标签名 name 须为 1–{TAG_NAME_MAX} 个字符", field="name")
        await self._call_json(app, "/cgi-bin/tags/update", {"tag": {"id": tag_id, "name": name}})

    async def delete_tag(self, app: AppCredentials, tag_id: int) -> None:
        await self._call_json(app, "/cgi-bin/tags/delete", {"tag": {"id": tag_id}})

    async def tag_users(
        self, app: AppCredentials, tag_id: int, openids: Sequence[str], *, tag: bool = True
    ) -> None:
        """Tag (`members/batchtagging`) or untag (`batchuntagging`) 1–50 followers in one call."""
        if not 1 <= len(openids) <= TAG_BATCH_MAX:
            raise WeChatRequestInvalid(f"openid_list 须为 1–{TAG_BATCH_MAX} 个", field="openid_list")
        path = "/cgi-bin/tags/members/" + ("batchtagging" if tag else "batchuntagging")
        await self._call_json(app, path, {"openid_list": list(openids), "tagid": tag_id})

    async def tag_followers(
        self, app: AppCredentials, tag_id: int, next_openid: str = ""
    ) -> tuple[list[str], str]:
        """One page (up to 10,000) of the tag's followers after `next_openid`, and the next page's start
        ("" at the end)."""
        answer = await self._call_json(
            app, "/cgi-bin/user/tag/get", {"tagid": tag_id, "next_openid": next_openid}
        )
        openids = (answer.get("data") or {}).get("openid") or []
        return [str(o) for o in openids], str(answer.get("next_openid") or "")

    async def user_tag_ids(self, app: AppCredentials, openid: str) -> list[int]:
        """The tags a follower holds (`tags/getidlist`)."""
        answer = await self._call_json(app, "/cgi-bin/tags/getidlist", {"openid": openid})
        return [int(tag_id) for tag_id in answer.get("tagid_list") or []]

    # -- mini-program --------------------------------------------------------------------------------------

    async def send_subscribe(
        self,
        app: AppCredentials,
        openid: str,
        template_id: str,
        data: Mapping[str, str],
        *,
        page: str | None = None,
        miniprogram_state: str = "formal",
        lang: str = "zh_CN",
        client_msg_id: str | None = None,
    ) -> None:
        """A mini-program subscribe message; it uses up one of the user's grants for `template_id`.
        `client_msg_id`: the campaign's anti-replay id (a repeat answers 45065, `DuplicateClientMsgId`)."""
        if miniprogram_state not in SUBSCRIBE_STATES:
            raise WeChatRequestInvalid(
                f"miniprogram_state 须为以下之一：{'、'.join(SUBSCRIBE_STATES)}", field="miniprogram_state"
            )
        if lang not in SUBSCRIBE_LANGS:
            raise WeChatRequestInvalid(f"lang 须为以下之一：{'、'.join(SUBSCRIBE_LANGS)}", field="lang")
        body: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "data": _wrap_data(data, field_name="data"),
            "miniprogram_state": miniprogram_state,
            "lang": lang,
        }
        if page:
            body["page"] = page
        if client_msg_id is not None:
            body["client_msg_id"] = self._client_msg_id(client_msg_id)
        await self._call_json(app, "/cgi-bin/message/subscribe/send", body)

    @staticmethod
    def _client_msg_id(value: str) -> str:
        if not value or len(value.encode()) > CLIENT_MSG_ID_MAX_BYTES:
            raise WeChatRequestInvalid(
                f"client_msg_id 须为 1–{CLIENT_MSG_ID_MAX_BYTES} 字节", field="client_msg_id"
            )
        return value

    # -- mass send (群发) -----------------------------------------------------------------------------------

    async def mass_send_text(
        self,
        app: AppCredentials,
        openids: Sequence[str],
        text: str,
        *,
        client_msg_id: str,
        tag_id: int | None = None,
    ) -> int:
        """A text mass message to 2–10,000 openids (`mass/send`), or with `tag_id` to the followers
        carrying that WeChat tag (`mass/sendall`); WeChat's msg_id. A repeated `client_msg_id` (24 h)
        raises `DuplicateClientMsgId` carrying the first call's msg_id."""
        if not text:
            raise WeChatRequestInvalid("text 不能为空", field="text")
        body: dict[str, Any] = {
            "msgtype": "text",
            "text": {"content": text},
            "clientmsgid": self._client_msg_id(client_msg_id),
        }
        if tag_id is not None:
            body["filter"] = {"is_to_all": False, "tag_id": tag_id}
            path = "/cgi-bin/message/mass/sendall"
        else:
            if not MASS_MIN_OPENIDS <= len(openids) <= MASS_MAX_OPENIDS:
                raise WeChatRequestInvalid(
                    f"群发名单须为 {MASS_MIN_OPENIDS}–{MASS_MAX_OPENIDS} 个 openid", field="touser"
                )
            body["touser"] = list(openids)
            path = "/cgi-bin/message/mass/send"
        answer = await self._call_json(app, path, body)
        msg_id = answer.get("msg_id")
        if not isinstance(msg_id, int):
            raise WeChatUnavailable(-1, f"{path} answered without a msg_id")
        return msg_id

    async def mass_preview_text(self, app: AppCredentials, openid: str, text: str) -> None:
        """`mass/preview`: the mass message to one follower only (a test send; no quota used)."""
        if not text:
            raise WeChatRequestInvalid("text 不能为空", field="text")
        body = {"touser": openid, "msgtype": "text", "text": {"content": text}}
        await self._call_json(app, "/cgi-bin/message/mass/preview", body)

    async def mass_status(self, app: AppCredentials, msg_id: int) -> str:
        """`mass/get`: WeChat's status of a mass message (SEND_SUCCESS, SENDING, SEND_FAIL, DELETE)."""
        answer = await self._call_json(app, "/cgi-bin/message/mass/get", {"msg_id": msg_id})
        return str(answer.get("msg_status", ""))

    async def code2session(self, app: AppCredentials, js_code: str) -> MpSession:
        """Exchange a `wx.login` code (single use, 5 minutes) for the user's openid and session key."""
        if not js_code:
            raise WeChatRequestInvalid("js_code 不能为空", field="js_code")
        params = {
            "appid": app.appid,
            "secret": app.secret,
            "js_code": js_code,
            "grant_type": "authorization_code",
        }
        answer = await self._json("GET", "/sns/jscode2session", params=params)
        openid, session_key, unionid = answer.get("openid"), answer.get("session_key"), answer.get("unionid")
        if not isinstance(openid, str) or not openid or not isinstance(session_key, str):
            raise WeChatUnavailable(-1, "jscode2session answered without an openid")
        return MpSession(
            openid=openid,
            session_key=session_key,
            unionid=unionid if isinstance(unionid, str) and unionid else None,
        )

    async def get_unlimited_wxacode(
        self,
        app: AppCredentials,
        scene: str,
        page: str,
        *,
        width: int = 430,
        env_version: str = "release",
        check_path: bool = True,
    ) -> bytes:
        """A mini-program code image (PNG or JPEG bytes) for `page` carrying `scene`."""
        if not WXACODE_SCENE.fullmatch(scene):
            raise WeChatRequestInvalid(
                "scene 须为 1–32 个字符，只能使用 0-9 A-Z a-z 及 !#$&'()*+,/:;=?@-._~", field="scene"
            )
        if page.startswith("/") or "?" in page:
            raise WeChatRequestInvalid("page 须为页面路径，不以 '/' 开头且不带查询参数", field="page")
        if not 280 <= width <= 1280:
            raise WeChatRequestInvalid("width 须在 280 到 1280 像素之间", field="width")
        if env_version not in WXACODE_ENVS:
            raise WeChatRequestInvalid(
                f"env_version 须为以下之一：{'、'.join(WXACODE_ENVS)}", field="env_version"
            )
        body: dict[str, Any] = {
            "scene": scene,
            "width": width,
            "env_version": env_version,
            "check_path": check_path,
        }
        if page:
            body["page"] = page
        content_type, payload = await self._call(app, "/wxa/getwxacodeunlimit", body)
        if _looks_like_json(content_type, payload):
            self._decode("/wxa/getwxacodeunlimit", payload)
            raise WeChatUnavailable(-1, "getwxacodeunlimit answered with JSON instead of an image")
        return payload


def _looks_like_json(content_type: str, payload: bytes) -> bool:
    """WeChat answers image endpoints with image bytes, or with a JSON error (content types vary)."""
    if content_type.startswith("image/"):
        return False
    if payload.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8")):
        return False
    return payload.lstrip()[:1] == b"{" or "json" in content_type or "text/" in content_type
