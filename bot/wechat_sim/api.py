"""The emulated WeChat endpoints: WeChat's validation order, error codes and answer shapes.

Errors are HTTP 200 with `{"errcode", "errmsg"}` like WeChat's. Template-message anti-replay: a repeated
`client_msg_id` for the same openid within 10 minutes is rejected with 45065 and nothing is sent; the answer
also carries the original `msgid` so a caller can treat it as "already sent".
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import qrcode
from aiohttp import web

from bot.wechat_sim.campaigns import MASS_ROUTES, subscribe_repeat, subscribe_sent
from bot.wechat_sim.menu import MENU_ROUTES
from bot.wechat_sim.state import CLIENT_MSG_ID_SECONDS, SimError, SimInjected, SimState
from bot.wechat_sim.tags import TAG_ROUTES

Body = dict[str, Any]
# (state, request, JSON body, appid of the access token or "" for endpoints without one)
Endpoint = Callable[[SimState, web.Request, Body, str], Awaitable[Body | web.Response]]

SIM_STATE: web.AppKey[SimState] = web.AppKey("wechat_sim_state", SimState)
QR_MAX_EXPIRE = 2_592_000
WXACODE_SCENE = re.compile(r"[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]{1,32}")
TEMPLATE_VALUE_MAX = 20
# Subscribe-message keyword types and their value limits (characters).
SUBSCRIBE_LIMITS = {
    "thing": 20,
    "name": 10,
    "phrase": 5,
    "symbol": 5,
    "number": 32,
    "letter": 32,
    "character_string": 32,
    "phone_number": 17,
    "car_number": 8,
    "amount": 32,
    "time": 32,
    "date": 32,
}
TITLE_URL = ("title", "url")
SUBSCRIBE_KEY = re.compile(r"([a-z_]+?)(\d+)")


def _error(errcode: int, errmsg: str) -> web.Response:
    return web.json_response({"errcode": errcode, "errmsg": f"{errmsg} rid: {secrets.token_hex(6)}"})


def _string(body: Body, name: str, errcode: int = 47003) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise SimError(errcode, f"argument invalid! {name}")
    return value


def _values(data: Any) -> dict[str, str]:
    """`{"key": {"value": "..."}}` → `{"key": "..."}`, or 47003."""
    if not isinstance(data, dict) or not data:
        raise SimError(47003, "argument invalid! data")
    values: dict[str, str] = {}
    for key, item in data.items():
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            raise SimError(47003, f"argument invalid! data.{key}.value")
        values[key] = item["value"]
    return values


def _check_keys(keys: tuple[str, ...] | None, values: dict[str, str]) -> None:
    if keys is not None and set(keys) != set(values):
        raise SimError(47003, f"argument invalid! data keys must be {', '.join(keys)}")


async def stable_token(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    if body.get("grant_type") != "client_credential":
        raise SimError(40002, "invalid grant_type")
    app = state.authenticate(_string(body, "appid", 41002), _string(body, "secret", 41004))
    force = body.get("force_refresh", False)
    if not isinstance(force, bool):
        raise SimError(47001, "data format error: force_refresh")
    token, expires_in = state.token_for(app, force_refresh=force)
    return {"access_token": token, "expires_in": expires_in}


async def custom_send(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    msgtype = body.get("msgtype")
    if msgtype == "text":
        text = body.get("text")
        if not isinstance(text, dict) or not isinstance(text.get("content"), str) or not text["content"]:
            raise SimError(47001, "data format error: text.content")
        if len(text["content"].encode()) > 2048:
            raise SimError(45002, "content size out of limit")
    elif msgtype == "news":
        news = body.get("news")
        articles = news.get("articles") if isinstance(news, dict) else None
        if not isinstance(articles, list) or not articles:
            raise SimError(47001, "data format error: news.articles")
        if len(articles) > 1:
            raise SimError(45008, "article size out of limit")
        article = articles[0]
        if not isinstance(article, dict) or not all(isinstance(article.get(k), str) for k in TITLE_URL):
            raise SimError(47001, "data format error: news.articles[0]")
    elif msgtype == "image":
        image = body.get("image")
        state.live_media(appid, image.get("media_id") if isinstance(image, dict) else None)
    else:
        raise SimError(40008, "invalid message type (the simulator knows text, news and image)")
    openid = state.recipient(appid, body.get("touser"), must_follow=True)
    state.rate_limit("custom", appid, state.custom_send_per_minute)
    state.use_window(appid, openid)
    return {}


async def template_send(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    openid = state.recipient(appid, body.get("touser"), must_follow=True)
    template_id = body.get("template_id")
    templates = state.apps[appid].templates
    if not isinstance(template_id, str) or template_id not in templates:
        raise SimError(40037, "invalid template_id")
    values = _values(body.get("data"))
    for key, value in values.items():
        if len(value) > TEMPLATE_VALUE_MAX or "\n" in value or "\r" in value:
            raise SimError(47003, f"argument invalid! data.{key}.value: over 20 characters or a line break")
    _check_keys(templates[template_id], values)
    miniprogram = body.get("miniprogram")
    if miniprogram is not None and not (
        isinstance(miniprogram, dict) and isinstance(miniprogram.get("appid"), str)
    ):
        raise SimError(47003, "argument invalid! miniprogram.appid")
    client_msg_id = body.get("client_msg_id")
    if client_msg_id is not None:
        if not isinstance(client_msg_id, str) or len(client_msg_id.encode()) > 64:
            raise SimError(45067, "clientmsgid size out of limit")
        seen = state.sent_msgids.get((appid, openid, client_msg_id))
        if seen is not None and seen[1] + CLIENT_MSG_ID_SECONDS > state.now():
            return {"errcode": 45065, "errmsg": "clientmsgid exist", "msgid": seen[0]}
    msgid = state.new_msgid()
    if client_msg_id is not None:
        state.sent_msgids[(appid, openid, client_msg_id)] = (msgid, state.now())
    return {"msgid": msgid}


async def subscribe_send(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    openid = state.recipient(appid, body.get("touser"), must_follow=False)
    template_id = body.get("template_id")
    templates = state.apps[appid].templates
    if not isinstance(template_id, str) or template_id not in templates:
        raise SimError(40037, "invalid template_id")
    values = _values(body.get("data"))
    for key, value in values.items():
        match = SUBSCRIBE_KEY.fullmatch(key)
        limit = SUBSCRIBE_LIMITS.get(match.group(1)) if match else None
        if limit is None or not value or len(value) > limit:
            raise SimError(47003, f"argument invalid! data.{key}.value")
    _check_keys(templates[template_id], values)
    if body.get("miniprogram_state", "formal") not in ("developer", "trial", "formal"):
        raise SimError(47003, "argument invalid! miniprogram_state")
    if body.get("lang", "zh_CN") not in ("zh_CN", "en_US", "zh_HK", "zh_TW"):
        raise SimError(47003, "argument invalid! lang")
    if (repeat := subscribe_repeat(state, appid, openid, body)) is not None:
        return repeat
    grant = (appid, openid, template_id)
    if state.grants.get(grant, 0) < 1:
        raise SimError(43101, "user refuse to accept the msg")
    state.grants[grant] -= 1
    subscribe_sent(state, appid, openid, body)
    return {}


async def qrcode_create(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    action = body.get("action_name")
    info = body.get("action_info")
    scene = info.get("scene") if isinstance(info, dict) else None
    if not isinstance(scene, dict):
        raise SimError(40053, "invalid action info: action_info.scene missing")
    if action in ("QR_STR_SCENE", "QR_LIMIT_STR_SCENE"):
        value = scene.get("scene_str")
        if not isinstance(value, str) or not 1 <= len(value) <= 64:
            raise SimError(40053, "invalid action info: scene_str must be 1-64 characters")
    elif action in ("QR_SCENE", "QR_LIMIT_SCENE"):
        value = scene.get("scene_id")
        top = 100_000 if action == "QR_LIMIT_SCENE" else 2**32 - 1
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
            raise SimError(40053, "invalid action info: scene_id")
    else:
        raise SimError(40053, "invalid action info: action_name")
    permanent = action in ("QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE")
    if permanent and state.permanent_qrcodes(appid) >= state.permanent_qr_limit:
        raise SimError(45029, "qrcode count out of limit")
    answer: Body = {
        "ticket": "SIMTICKET" + secrets.token_urlsafe(24),
        "url": "http://weixin.qq.com/q/" + secrets.token_urlsafe(12),
    }
    if action in ("QR_SCENE", "QR_STR_SCENE"):
        expire = body.get("expire_seconds", 30)
        if not isinstance(expire, int) or isinstance(expire, bool) or not 1 <= expire <= QR_MAX_EXPIRE:
            raise SimError(40053, "invalid action info: expire_seconds must be at most 2592000")
        answer["expire_seconds"] = expire
    state.qrcodes[answer["ticket"]] = {
        "appid": appid,
        "action_name": action,
        "scene": value,
        "url": answer["url"],
        "expires_at": state.now() + answer["expire_seconds"] if "expire_seconds" in answer else None,
    }
    return answer


async def jscode2session(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    query = request.query
    if query.get("grant_type") != "authorization_code":
        raise SimError(40002, "invalid grant_type")
    app = state.authenticate(query.get("appid", ""), query.get("secret", ""))
    code = query.get("js_code", "")
    if not code:
        raise SimError(41008, "missing code")
    found = state.redeem_code(app.appid, code)
    answer: Body = {"openid": found.openid, "session_key": secrets.token_urlsafe(16)}
    if found.unionid:
        answer["unionid"] = found.unionid
    return answer


async def user_info(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    """cgi-bin/user/info: a follower's subscription and, when the account is bound to an Open Platform
    account, their unionid; 40003 for an openid the account does not know."""
    openid = request.query.get("openid", "")
    user = state.users.get((appid, openid))
    if user is None:
        raise SimError(40003, "invalid openid")
    answer: Body = {"subscribe": 1 if user.following else 0, "openid": openid}
    if user.unionid:
        answer["unionid"] = user.unionid
    return answer


async def wxacode_unlimit(state: SimState, request: web.Request, body: Body, appid: str) -> web.Response:
    scene = body.get("scene")
    if not isinstance(scene, str) or not WXACODE_SCENE.fullmatch(scene):
        raise SimError(40169, "invalid length for scene, or the data is not json string")
    page = body.get("page", "")
    if not isinstance(page, str) or page.startswith("/") or "?" in page:
        raise SimError(41030, "invalid page rid")
    if body.get("env_version", "release") not in ("release", "trial", "develop"):
        raise SimError(40097, "invalid args: env_version")
    width = body.get("width", 430)
    if not isinstance(width, int) or isinstance(width, bool):
        raise SimError(40097, "invalid args: width")
    state.rate_limit("wxacode", appid, state.wxacode_per_minute)
    image = qrcode.make(scene, box_size=max(1, min(1280, max(280, width)) // 37))
    png = io.BytesIO()
    image.save(png)
    return web.Response(body=png.getvalue(), content_type="image/png")


ROUTES: dict[str, tuple[str, Endpoint, bool]] = {
    # endpoint: (method, handler, takes an access token)
    "cgi-bin/stable_token": ("POST", stable_token, False),
    "cgi-bin/message/custom/send": ("POST", custom_send, True),
    "cgi-bin/message/template/send": ("POST", template_send, True),
    "cgi-bin/message/subscribe/send": ("POST", subscribe_send, True),
    "cgi-bin/qrcode/create": ("POST", qrcode_create, True),
    "sns/jscode2session": ("GET", jscode2session, False),
    "cgi-bin/user/info": ("GET", user_info, True),
    "wxa/getwxacodeunlimit": ("POST", wxacode_unlimit, True),
}


def _parse_body(method: str, raw: bytes) -> Body:
    if method != "POST":
        return {}
    if not raw:
        raise SimError(44002, "empty post data")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SimError(47001, "data format error") from None
    if not isinstance(body, dict):
        raise SimError(47001, "data format error")
    return body


def _make_handler(endpoint: str, handler: Endpoint, takes_token: bool) -> Callable[..., Any]:
    async def answer(
        request: web.Request, record: Body, raw: bytes, injected: SimInjected | None
    ) -> web.Response:
        state = request.app[SIM_STATE]
        try:
            record["body"] = _parse_body(request.method, raw)
            if injected is not None and injected.fails:
                record["errcode"] = injected.errcode
                if injected.status >= 500:
                    return web.Response(status=injected.status, text="simulated server error")
                raise SimError(injected.errcode, injected.errmsg)
            appid = state.check_token(request.query.get("access_token")).appid if takes_token else ""
            answered = await handler(state, request, record["body"], appid)
        except SimError as exc:
            record["errcode"] = exc.errcode
            return _error(exc.errcode, exc.errmsg)
        if isinstance(answered, web.Response):
            return answered
        record["errcode"] = answered.get("errcode", 0)
        if "access_token" in answered or "session_key" in answered:
            return web.json_response(answered)
        return web.json_response({"errcode": 0, "errmsg": "ok", **answered})

    async def serve(request: web.Request) -> web.StreamResponse:
        state = request.app[SIM_STATE]
        raw = await request.read()
        record: Body = {
            "endpoint": endpoint,
            "method": request.method,
            "query": dict(request.query),
            "body": None,
            "raw": raw.decode("utf-8", "replace"),
            "errcode": 0,
            "at": state.now(),
        }
        state.recorded.append(record)
        injected = state.take_injected(endpoint)
        response = await answer(request, record, raw, injected)
        if injected is not None and injected.delay:
            await asyncio.sleep(injected.delay)  # handled already: only the answer is late
        return response

    return serve


def add_api_routes(app: web.Application) -> None:
    for endpoint, (method, handler, takes_token) in {
        **ROUTES,
        **MENU_ROUTES,
        **TAG_ROUTES,
        **MASS_ROUTES,
    }.items():
        app.router.add_route(method, f"/{endpoint}", _make_handler(endpoint, handler, takes_token))
