"""The emulated campaign endpoints: OA mass send (`message/mass/send`, `mass/sendall`, `mass/get`, the
`MASSSENDJOBFINISH` report) and Tencent Cloud SMS `SendSms` (API 3.0, its TC3-HMAC-SHA256 signature
verified).

Mass send (WECHAT.md §9): 2–10,000 openids a call (40130), `clientmsgid` ≤ 64 bytes (45067) and unique
for 24 hours (45065, answered with the first call's msg_id), 60 requests a minute per account (45009),
`mass_daily_limit` calls a day (45028 past it); a member receives at most 4 mass messages a calendar
month — the rest count as errors in the job's finish report, as WeChat reports them.

SMS: the `Authorization` header must sign the request with a registered SecretKey (TC3), the timestamp
within five minutes, action `SendSms`, version `2021-01-11`; errors are Tencent's `Response.Error`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bot.wechat_sim.campaign_state import SimMassJob
from bot.wechat_sim.state import SimError, SimState, SimUser
from handlers.rules import tc3

Body = dict[str, Any]
Endpoint = Callable[[SimState, web.Request, Body, str], Awaitable[Body | web.Response]]
MASS_PER_MINUTE = 60
MASS_PER_MONTH = 4
MASS_MAX_OPENIDS = 10_000
CLIENT_ID_SECONDS = 24 * 3600
CLIENT_ID_MAX_BYTES = 64
SMS_MAX_PHONES = 200
SMS_CLOCK_SKEW = 300


def _month(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m")


def _client_id(state: SimState, appid: str, body: Body) -> tuple[str | None, Body | None]:
    """The call's clientmsgid, or the answer to a repeat of one (45065 with the first msg_id)."""
    client_id = body.get("clientmsgid")
    if client_id is None:
        return None, None
    if not isinstance(client_id, str) or len(client_id.encode()) > CLIENT_ID_MAX_BYTES:
        raise SimError(45067, "clientmsgid size out of limit")
    seen = state.campaigns.mass_client_ids.get((appid, client_id))
    if seen is not None and seen[1] + CLIENT_ID_SECONDS > state.now():
        return client_id, {"errcode": 45065, "errmsg": "clientmsgid exist", "msg_id": seen[0]}
    return client_id, None


def _mass_text(body: Body) -> str:
    if body.get("msgtype") != "text":
        raise SimError(40008, "invalid message type (the simulator knows text mass messages)")
    text = body.get("text")
    if not isinstance(text, dict) or not isinstance(text.get("content"), str) or not text["content"]:
        raise SimError(47001, "data format error: text.content")
    return str(text["content"])


def _mass_quota(state: SimState, appid: str) -> None:
    state.rate_limit("mass", appid, MASS_PER_MINUTE)
    day = datetime.fromtimestamp(state.now(), UTC).strftime("%Y-%m-%d")
    calls = state.campaigns.mass_calls.get((appid, day), 0)
    if calls >= state.campaigns.mass_daily_limit:
        raise SimError(45028, "has no masssend quota")
    state.campaigns.mass_calls[(appid, day)] = calls + 1


def _job(state: SimState, appid: str, openids: list[str], text: str, client_id: str | None) -> Body:
    sim = state.campaigns
    msg_id = state.new_msgid()
    job = SimMassJob(msg_id, appid, openids, text, state.now())
    month = _month(job.created_at)
    for openid in openids:
        user = state.users.get((appid, openid))
        received = sim.mass_received.get((appid, openid, month), 0)
        if user is None or not user.following or received >= MASS_PER_MONTH:
            job.errors += 1
        else:
            sim.mass_received[(appid, openid, month)] = received + 1
            job.sent += 1
    sim.mass_jobs[msg_id] = job
    if client_id is not None:
        sim.mass_client_ids[(appid, client_id)] = (msg_id, state.now())
    return {"msg_id": msg_id, "msg_data_id": msg_id}


async def mass_send(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    touser = body.get("touser")
    if not isinstance(touser, list) or not all(isinstance(o, str) and o for o in touser):
        raise SimError(40130, "invalid openid list size, at least two openid")
    if not 2 <= len(touser) <= MASS_MAX_OPENIDS:
        raise SimError(40130, "invalid openid list size, at least two openid")
    text = _mass_text(body)
    client_id, repeat = _client_id(state, appid, body)
    if repeat is not None:
        return repeat
    _mass_quota(state, appid)
    return _job(state, appid, list(dict.fromkeys(touser)), text, client_id)


async def mass_sendall(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    """To every follower (`is_to_all`) or to those carrying a user tag (`SimState.user_tags`)."""
    filt = body.get("filter")
    if not isinstance(filt, dict) or not isinstance(filt.get("is_to_all", False), bool):
        raise SimError(47001, "data format error: filter")
    text = _mass_text(body)
    client_id, repeat = _client_id(state, appid, body)
    if repeat is not None:
        return repeat
    if filt.get("is_to_all"):
        openids = [o for (a, o), user in state.users.items() if a == appid and user.following]
    else:
        tag_id = filt.get("tag_id")
        tag = state.user_tags.of(appid).get(tag_id) if isinstance(tag_id, int) else None
        if tag is None:
            raise SimError(45159, "invalid tag id")
        openids = sorted(tag.openids)
    _mass_quota(state, appid)
    return _job(state, appid, openids, text, client_id)


async def mass_get(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    msg_id = body.get("msg_id")
    job = state.campaigns.mass_jobs.get(msg_id) if isinstance(msg_id, int) else None
    if job is None or job.appid != appid:
        raise SimError(40003, "invalid msg_id")  # WeChat answers an unknown msg_id this way
    return {"msg_id": job.msg_id, "msg_status": "SEND_SUCCESS"}


def finish_event(state: SimState, msg_id: int, to_user: str) -> str:
    """The `MASSSENDJOBFINISH` event WeChat pushes for a job (plaintext XML, for a test to post)."""
    job = state.campaigns.mass_jobs[msg_id]
    status = "send success" if job.sent else "send fail"
    return (
        f"<xml><ToUserName><![CDATA[{to_user}]]></ToUserName><FromUserName><![CDATA[mphelper]]></FromUserName>"
        f"<CreateTime>{int(state.now())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[MASSSENDJOBFINISH]]></Event><MsgID>{job.msg_id}</MsgID>"
        f"<Status><![CDATA[{status}]]></Status><TotalCount>{len(job.openids)}</TotalCount>"
        f"<FilterCount>{len(job.openids)}</FilterCount><SentCount>{job.sent}</SentCount>"
        f"<ErrorCount>{job.errors}</ErrorCount></xml>"
    )


async def mass_preview(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    _mass_text(body)
    state.recipient(appid, body.get("touser"), must_follow=True)
    return {"msg_id": state.new_msgid()}


MASS_ROUTES: dict[str, tuple[str, Endpoint, bool]] = {
    "cgi-bin/message/mass/send": ("POST", mass_send, True),
    "cgi-bin/message/mass/sendall": ("POST", mass_sendall, True),
    "cgi-bin/message/mass/get": ("POST", mass_get, True),
    "cgi-bin/message/mass/preview": ("POST", mass_preview, True),
}


def subscribe_repeat(state: SimState, appid: str, openid: str, body: Body) -> Body | None:
    """Memberbot's campaign sends carry a `client_msg_id` on subscribe messages too; a repeat within 24
    hours is answered 45065 and uses no grant (the simulator's idempotent record of a resumed send)."""
    client_id = body.get("client_msg_id")
    if client_id is None:
        return None
    if not isinstance(client_id, str) or len(client_id.encode()) > CLIENT_ID_MAX_BYTES:
        raise SimError(45067, "clientmsgid size out of limit")
    seen = state.campaigns.subscribe_client_ids.get((appid, openid, client_id))
    if seen is not None and seen + CLIENT_ID_SECONDS > state.now():
        return {"errcode": 45065, "errmsg": "clientmsgid exist"}
    return None


def subscribe_sent(state: SimState, appid: str, openid: str, body: Body) -> None:
    client_id = body.get("client_msg_id")
    if isinstance(client_id, str):
        state.campaigns.subscribe_client_ids[(appid, openid, client_id)] = state.now()


# -- Tencent Cloud SMS ------------------------------------------------------------------------------


def _sms_error(code: str, message: str) -> web.Response:
    return web.json_response({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": _rid()}})


def _rid() -> str:
    return secrets.token_hex(16)


def _sms_check(state: SimState, request: web.Request, raw: bytes) -> web.Response | Body:
    header = request.headers.get("Authorization", "")
    credential = tc3.parse_authorization(header)
    if credential is None:
        return _sms_error("AuthFailure.InvalidAuthorization", "Authorization is not TC3-HMAC-SHA256")
    secret = state.campaigns.sms_keys.get(credential.secret_id)
    if secret is None:
        return _sms_error("AuthFailure.SecretIdNotFound", "the SecretId is not found")
    try:
        timestamp = int(request.headers.get("X-TC-Timestamp", ""))
    except ValueError:
        return _sms_error("MissingParameter", "X-TC-Timestamp")
    if abs(timestamp - state.now()) > SMS_CLOCK_SKEW:
        return _sms_error("AuthFailure.SignatureExpire", "the signature has expired")
    headers = {
        "content-type": request.headers.get("Content-Type", ""),
        "host": request.headers.get("Host", ""),
    }
    if not tc3.verify(
        header, secret, method=request.method, headers=headers, payload=raw, timestamp=timestamp
    ):
        return _sms_error("AuthFailure.SignatureFailure", "the signature does not match")
    if request.headers.get("X-TC-Action") != "SendSms" or request.headers.get("X-TC-Version") != "2021-01-11":
        return _sms_error("InvalidAction", "the simulator knows SendSms of version 2021-01-11")
    try:
        body = json.loads(raw)
    except ValueError:
        return _sms_error("InvalidParameter", "the body is not JSON")
    return body if isinstance(body, dict) else _sms_error("InvalidParameter", "the body is not an object")


def _sms_send(state: SimState, body: Body) -> web.Response:
    phones = body.get("PhoneNumberSet")
    if not isinstance(phones, list) or not 1 <= len(phones) <= SMS_MAX_PHONES:
        return _sms_error("InvalidParameterValue.PhoneNumberCountLimit", "1–200 numbers per call")
    for name in ("SmsSdkAppId", "TemplateId", "SignName"):
        if not isinstance(body.get(name), str) or not body[name]:
            return _sms_error("MissingParameter", name)
    params = body.get("TemplateParamSet", [])
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        return _sms_error("InvalidParameterValue.TemplateParameterFormatError", "TemplateParamSet")
    statuses = []
    for phone in phones:
        ok = (
            isinstance(phone, str) and phone.startswith("+") and phone[1:].isdigit() and 8 <= len(phone) <= 16
        )
        code, message = (
            ("Ok", "send success") if ok else ("InvalidParameterValue.IncorrectPhoneNumber", "bad number")
        )
        statuses.append(
            {
                "SerialNo": secrets.token_hex(8) if ok else "",
                "PhoneNumber": phone,
                "Fee": 1 if ok else 0,
                "SessionContext": body.get("SessionContext", ""),
                "Code": code,
                "Message": message,
                "IsoCode": "CN",
            }
        )
        if ok:
            state.campaigns.sms_sent.append(
                {"phone": phone, "template_id": body["TemplateId"], "params": params, "at": state.now()}
            )
    return web.json_response({"Response": {"SendStatusSet": statuses, "RequestId": _rid()}})


async def sms_endpoint(state: SimState, request: web.Request) -> web.Response:
    raw = await request.read()
    record: Body = {
        "endpoint": "tencent-sms",
        "method": "POST",
        "query": {},
        "body": None,
        "raw": raw.decode("utf-8", "replace"),
        "errcode": 0,
        "at": state.now(),
    }
    state.recorded.append(record)
    checked = _sms_check(state, request, raw)
    if isinstance(checked, web.Response):
        record["errcode"] = -1
        return checked
    record["body"] = checked
    return _sms_send(state, checked)


# -- control --------------------------------------------------------------------------------------------


async def register_sms_key(state: SimState, request: web.Request) -> web.Response:
    body = await request.json()
    secret_id, secret_key = body.get("secret_id"), body.get("secret_key")
    if not isinstance(secret_id, str) or not secret_id or not isinstance(secret_key, str) or not secret_key:
        return web.json_response({"error": "secret_id and secret_key are required"}, status=400)
    state.campaigns.sms_keys[secret_id] = secret_key
    return web.json_response({"ok": True})


async def mass_jobs(state: SimState, request: web.Request) -> web.Response:
    jobs = [
        {"msg_id": j.msg_id, "appid": j.appid, "total": len(j.openids), "sent": j.sent, "errors": j.errors}
        for j in state.campaigns.mass_jobs.values()
    ]
    return web.json_response({"jobs": jobs})


async def deliveries(state: SimState, request: web.Request) -> web.Response:
    """What an endpoint delivered, counted: `delivered` (answered 0), `unique` (distinct touser + client
    id among them), `duplicates` (delivered − unique), `refused` (answered otherwise, e.g. 45065), the
    simulator-clock time of the first and last delivery; `prefix` keeps the sends whose client id starts
    with it. The benchmark's proof without a 100,000-row download."""
    started = time.monotonic()
    endpoint = request.query.get("endpoint", "cgi-bin/message/subscribe/send")
    prefix = request.query.get("prefix", "")

    def client_id(record: Body) -> str:
        body = record["body"] if isinstance(record["body"], dict) else {}
        return str(body.get("client_msg_id", body.get("clientmsgid", "")))

    mine = [r for r in state.records(endpoint) if client_id(r).startswith(prefix)]
    accepted = [r for r in mine if r["errcode"] == 0]
    keys = {(str(r["body"].get("touser")), client_id(r)) for r in accepted}
    times = [r["at"] for r in accepted]
    return web.json_response(
        {
            "endpoint": endpoint,
            "requests": len(mine),
            "delivered": len(accepted),
            "unique": len(keys),
            "duplicates": len(accepted) - len(keys),
            "refused": len(mine) - len(accepted),
            "first_at": min(times) if times else None,
            "last_at": max(times) if times else None,
            "ms": round((time.monotonic() - started) * 1000, 1),
        }
    )


async def bulk_grants(state: SimState, request: web.Request) -> web.Response:
    """Many mini-program users of `appid`, each accepting `template_id` `count` times."""
    body = await request.json()
    appid, template_id = body.get("appid"), body.get("template_id")
    openids, count = body.get("openids"), body.get("count", 1)
    if not isinstance(openids, list) or not all(isinstance(o, str) and o for o in openids):
        return web.json_response({"error": "openids: a list of non-empty strings"}, status=400)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        return web.json_response({"error": "count: at least 1"}, status=400)
    try:
        state.app(str(appid))
        if not isinstance(template_id, str) or not template_id:
            raise ValueError("template_id is required")
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    for openid in openids:
        state.users.setdefault((appid, openid), SimUser(unionid=None, following=False))
        key = (appid, openid, template_id)
        state.grants[key] = state.grants.get(key, 0) + count
    return web.json_response({"ok": True, "users": len(openids)})


Control = Callable[[SimState, web.Request], Awaitable[web.Response]]


def add_campaign_routes(app: web.Application, key: web.AppKey[SimState]) -> None:
    """The SMS endpoint (`/tencent-sms/`, what `TENCENT_SMS_ENDPOINT` points at) and the control routes
    `POST /sim/sms/keys {secret_id, secret_key}`, `GET /sim/mass/jobs`, `GET /sim/deliveries?endpoint=`,
    `POST /sim/bulk/grants {appid, template_id, openids, count?}`."""

    def bind(control: Control) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            return await control(request.app[key], request)

        return serve

    app.router.add_post("/tencent-sms/", bind(sms_endpoint))
    app.router.add_post("/sim/sms/keys", bind(register_sms_key))
    app.router.add_get("/sim/mass/jobs", bind(mass_jobs))
    app.router.add_get("/sim/deliveries", bind(deliveries))
    app.router.add_post("/sim/bulk/grants", bind(bulk_grants))
