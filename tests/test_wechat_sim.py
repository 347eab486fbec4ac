"""The WeChat API simulator's own validation, over HTTP (WeChat endpoints and /sim controls)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.wechat_sim import SimState, create_sim_app

APPID, SECRET, FAN = "wxsim000000000001", "sim-secret", "o-sim-fan"


@pytest.fixture
def state() -> SimState:
    sim = SimState()
    sim.add_app(APPID, SECRET)
    sim.add_follower(APPID, FAN)
    sim.add_template(APPID, "tmpl-1")
    return sim


@pytest.fixture
async def http(aiohttp_client: Any, state: SimState) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(create_sim_app(state))


async def fetch_token(http: TestClient, **extra: Any) -> dict[str, Any]:
    body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET, **extra}
    response = await http.post("/cgi-bin/stable_token", json=body)
    assert response.status == 200
    answer: dict[str, Any] = await response.json()
    return answer


async def call(http: TestClient, endpoint: str, body: dict[str, Any], token: str | None = None) -> Any:
    if token is None:
        token = (await fetch_token(http))["access_token"]
    response = await http.post(f"/{endpoint}", params={"access_token": token}, json=body)
    assert response.status == 200
    return await response.json()


def text(openid: str = FAN, content: str = "你好") -> dict[str, Any]:
    return {"touser": openid, "msgtype": "text", "text": {"content": content}}


@pytest.mark.parametrize(
    ("override", "errcode"),
    [({"appid": "wxunknown"}, 40013), ({"secret": "wrong"}, 40125), ({"grant_type": "password"}, 40002)],
)
async def test_stable_token_rejects_bad_credentials(
    http: TestClient, override: dict[str, str], errcode: int
) -> None:
    assert (await fetch_token(http, **override))["errcode"] == errcode


async def test_stable_token_normal_mode_returns_the_same_token(http: TestClient, state: SimState) -> None:
    first, second = await fetch_token(http), await fetch_token(http)
    assert first["access_token"] == second["access_token"]
    assert first["expires_in"] == 7200 and 7190 <= second["expires_in"] <= 7200
    state.advance(7200 - 299)
    renewed = await fetch_token(http)
    assert renewed["access_token"] != first["access_token"] and renewed["expires_in"] == 7200
    assert state.force_refresh_count() == 0


async def test_force_refresh_is_counted_invalidates_and_is_limited(http: TestClient, state: SimState) -> None:
    old = (await fetch_token(http))["access_token"]
    new = (await fetch_token(http, force_refresh=True))["access_token"]
    assert new != old
    assert (await call(http, "cgi-bin/message/custom/send", text(), token=old))["errcode"] == 40001
    for _ in range(19):
        await fetch_token(http, force_refresh=True)
    assert (await fetch_token(http, force_refresh=True))["errcode"] == 45009
    assert state.force_refresh_count(APPID) == 20
    assert (await (await http.get("/sim/stats")).json()) == {"force_refreshes": {APPID: 20}}


async def test_token_checks(http: TestClient, state: SimState) -> None:
    response = await http.post("/cgi-bin/message/custom/send", json=text())
    assert (await response.json())["errcode"] == 41001
    assert (await call(http, "cgi-bin/message/custom/send", text(), token="forged"))["errcode"] == 40001
    token = (await fetch_token(http))["access_token"]
    state.advance(7201)
    assert (await call(http, "cgi-bin/message/custom/send", text(), token=token))["errcode"] == 42001


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"touser": FAN, "msgtype": "voice"}, 40008),
        (text(content=""), 47001),
        ({"touser": FAN, "msgtype": "news", "news": {"articles": [{"title": "a", "url": "u"}] * 2}}, 45008),
        ({"touser": FAN, "msgtype": "news", "news": {"articles": [{"title": "a"}]}}, 47001),
        (text(openid="o-stranger"), 40003),
    ],
)
async def test_custom_send_validates_payload_and_recipient(
    http: TestClient, state: SimState, body: dict[str, Any], errcode: int
) -> None:
    state.interact(APPID, FAN)
    assert (await call(http, "cgi-bin/message/custom/send", body))["errcode"] == errcode
    assert state.windows[(APPID, FAN)].sent == 0


async def test_custom_send_window_allows_five_messages_in_48_hours(http: TestClient, state: SimState) -> None:
    token = (await fetch_token(http))["access_token"]
    assert (await call(http, "cgi-bin/message/custom/send", text(), token))["errcode"] == 45015
    state.interact(APPID, FAN)
    answers = [await call(http, "cgi-bin/message/custom/send", text(), token) for _ in range(6)]
    assert [answer["errcode"] for answer in answers] == [0] * 5 + [45047]  # the quota: 45047
    state.interact(APPID, FAN)
    state.advance(48 * 3600 + 1)
    fresh = (await fetch_token(http))["access_token"]
    assert (await call(http, "cgi-bin/message/custom/send", text(), fresh))["errcode"] == 45015


async def test_custom_send_needs_a_follower_and_has_a_minute_limit(http: TestClient, state: SimState) -> None:
    state.add_follower(APPID, "o-gone", following=False)
    state.interact(APPID, FAN)
    assert (await call(http, "cgi-bin/message/custom/send", text("o-gone")))["errcode"] == 43004
    state.custom_send_per_minute = 1
    assert (await call(http, "cgi-bin/message/custom/send", text()))["errcode"] == 0
    assert (await call(http, "cgi-bin/message/custom/send", text()))["errcode"] == 45009
    state.advance(61)
    assert (await call(http, "cgi-bin/message/custom/send", text()))["errcode"] == 0


def template(value: str = "到账", **extra: Any) -> dict[str, Any]:
    return {"touser": FAN, "template_id": "tmpl-1", "data": {"thing1": {"value": value}}, **extra}


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (template(template_id="tmpl-x"), 40037),
        (template("x" * 21), 47003),
        (template("a\nb"), 47003),
        (template(data={}), 47003),
        (template(touser="o-x"), 40003),
        (template(client_msg_id="m" * 65), 45067),
    ],
)
async def test_template_send_validation(http: TestClient, body: dict[str, Any], errcode: int) -> None:
    assert (await call(http, "cgi-bin/message/template/send", body))["errcode"] == errcode


async def test_template_keys_are_checked_when_registered(http: TestClient, state: SimState) -> None:
    state.add_template(APPID, "tmpl-keys", ("thing1", "time2"))
    answer = await call(http, "cgi-bin/message/template/send", template(template_id="tmpl-keys"))
    assert answer["errcode"] == 47003


async def test_template_client_msg_id_dedups_for_ten_minutes(http: TestClient, state: SimState) -> None:
    first = await call(http, "cgi-bin/message/template/send", template(client_msg_id="c1"))
    again = await call(http, "cgi-bin/message/template/send", template(client_msg_id="c1"))
    other = await call(http, "cgi-bin/message/template/send", template(client_msg_id="c2"))
    assert first["errcode"] == 0 and isinstance(first["msgid"], int)
    assert (again["errcode"], again["msgid"]) == (45065, first["msgid"])
    assert other["errcode"] == 0 and other["msgid"] != first["msgid"]
    state.advance(601)
    later = await call(http, "cgi-bin/message/template/send", template(client_msg_id="c1"))
    assert later["errcode"] == 0 and later["msgid"] != first["msgid"]


def subscribe(**data: str) -> dict[str, Any]:
    return {"touser": FAN, "template_id": "tmpl-1", "data": {k: {"value": v} for k, v in data.items()}}


async def test_subscribe_send_consumes_grants(http: TestClient, state: SimState) -> None:
    state.grant(APPID, FAN, "tmpl-1", count=2)
    answers = [await call(http, "cgi-bin/message/subscribe/send", subscribe(thing1="签到")) for _ in range(3)]
    assert [answer["errcode"] for answer in answers] == [0, 0, 43101]


@pytest.mark.parametrize(
    "body",
    [
        subscribe(thing1="x" * 21),
        subscribe(name1="名" * 11),
        subscribe(weird1="x"),
        subscribe(),
        {**subscribe(thing1="ok"), "miniprogram_state": "beta"},
        {**subscribe(thing1="ok"), "lang": "fr"},
    ],
)
async def test_subscribe_send_rejects_bad_data_without_using_a_grant(
    http: TestClient, state: SimState, body: dict[str, Any]
) -> None:
    state.grant(APPID, FAN, "tmpl-1")
    assert (await call(http, "cgi-bin/message/subscribe/send", body))["errcode"] == 47003
    assert state.grants[(APPID, FAN, "tmpl-1")] == 1


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (
            {
                "action_name": "QR_STR_SCENE",
                "action_info": {"scene": {"scene_str": "a"}},
                "expire_seconds": 60,
            },
            0,
        ),
        ({"action_name": "QR_STR_SCENE", "action_info": {"scene_str": "a"}}, 40053),
        ({"action_name": "QR_STR_SCENE", "action_info": {"scene": {"scene_str": "a" * 65}}}, 40053),
        (
            {
                "action_name": "QR_STR_SCENE",
                "action_info": {"scene": {"scene_str": "a"}},
                "expire_seconds": 2592001,
            },
            40053,
        ),
        ({"action_name": "QR_LIMIT_SCENE", "action_info": {"scene": {"scene_id": 100001}}}, 40053),
        ({"action_name": "QR_SCENE", "action_info": {"scene": {"scene_id": 0}}}, 40053),
        ({"action_name": "QR_MAGIC", "action_info": {"scene": {"scene_str": "a"}}}, 40053),
    ],
)
async def test_qrcode_create_validation(http: TestClient, body: dict[str, Any], errcode: int) -> None:
    answer = await call(http, "cgi-bin/qrcode/create", body)
    assert answer["errcode"] == errcode
    if errcode == 0:
        assert answer["ticket"] and answer["expire_seconds"] == 60


async def code2session(http: TestClient, code: str, appid: str = APPID) -> Any:
    params = {"appid": appid, "secret": SECRET, "js_code": code, "grant_type": "authorization_code"}
    return await (await http.get("/sns/jscode2session", params=params)).json()


async def test_jscode2session_codes(http: TestClient, state: SimState) -> None:
    state.add_app("wxother", SECRET)
    code = state.mint_code(APPID, "o-mp", unionid="u-9")
    assert (await code2session(http, code, appid="wxother"))["errcode"] == 40029
    answer = await code2session(http, code)
    assert (answer["openid"], answer["unionid"]) == ("o-mp", "u-9") and answer["session_key"]
    assert (await code2session(http, code))["errcode"] == 40163
    assert (await code2session(http, "unknown"))["errcode"] == 40029
    assert (await code2session(http, ""))["errcode"] == 41008
    stale = state.mint_code(APPID, "o-mp")
    state.advance(301)
    assert (await code2session(http, stale))["errcode"] == 40029


async def test_wxacode_png_and_errors(http: TestClient, state: SimState) -> None:
    token = (await fetch_token(http))["access_token"]
    response = await http.post(
        "/wxa/getwxacodeunlimit",
        params={"access_token": token},
        json={"scene": "m=1&s=Ab", "page": "pages/index/index"},
    )
    assert response.content_type == "image/png"
    assert (await response.read()).startswith(b"\x89PNG")
    for body, errcode in [
        ({"scene": "a%20"}, 40169),
        ({"scene": "x" * 33}, 40169),
        ({"scene": "会员"}, 40169),
        ({"scene": "a", "page": "p?x=1"}, 41030),
    ]:
        assert (await call(http, "wxa/getwxacodeunlimit", body, token))["errcode"] == errcode
    state.wxacode_per_minute = 1
    assert (await call(http, "wxa/getwxacodeunlimit", {"scene": "a"}, token))["errcode"] == 45009


async def test_injected_errors_are_one_shot(http: TestClient, state: SimState) -> None:
    response = await http.post("/sim/errors", json={"endpoint": "cgi-bin/stable_token", "errcode": -1})
    assert response.status == 200
    assert (await fetch_token(http))["errcode"] == -1
    assert "access_token" in await fetch_token(http)
    await http.post("/sim/errors", json={"endpoint": "/cgi-bin/stable_token", "errcode": 0, "status": 503})
    assert (await http.post("/cgi-bin/stable_token", json={})).status == 503


async def test_a_delayed_success_is_handled_before_its_late_answer(http: TestClient, state: SimState) -> None:
    """`delay` with errcode 0: WeChat takes the message at once and answers late — the moment a caller
    that dies waiting leaves a message sent that it never heard about."""
    token = (await fetch_token(http))["access_token"]
    control = {"endpoint": "cgi-bin/message/template/send", "errcode": 0, "delay": 1}
    assert (await http.post("/sim/errors", json=control)).status == 200
    body = template(client_msg_id="slow-1")
    sending = asyncio.ensure_future(call(http, "cgi-bin/message/template/send", body, token))
    for _ in range(50):  # the request reaches the simulator and is handled
        if (APPID, FAN, "slow-1") in state.sent_msgids or sending.done():
            break
        await asyncio.sleep(0.01)
    assert (APPID, FAN, "slow-1") in state.sent_msgids
    assert not sending.done()  # sent, and the answer is still on its way
    answer = await sending
    assert answer["errcode"] == 0 and answer["msgid"] == state.sent_msgids[(APPID, FAN, "slow-1")][0]
    assert (await call(http, "cgi-bin/message/template/send", body, token))["errcode"] == 45065


async def test_control_routes_set_up_and_inspect(http: TestClient, state: SimState) -> None:
    for path, body in [
        ("/sim/apps", {"appid": "wxmp", "secret": "s"}),
        ("/sim/followers", {"appid": "wxmp", "openid": "o-1", "unionid": "u-1"}),
        ("/sim/interactions", {"appid": "wxmp", "openid": "o-1"}),
        ("/sim/templates", {"appid": "wxmp", "template_id": "t", "keys": ["thing1"]}),
        ("/sim/grants", {"appid": "wxmp", "openid": "o-1", "template_id": "t", "count": 2}),
    ]:
        assert (await http.post(path, json=body)).status == 200, path
    assert state.grants[("wxmp", "o-1", "t")] == 2 and state.users[("wxmp", "o-1")].unionid == "u-1"
    code = (await (await http.post("/sim/codes", json={"appid": "wxmp", "openid": "o-1"})).json())["code"]
    assert code in state.codes
    await fetch_token(http)
    records = await (await http.get("/sim/records", params={"endpoint": "cgi-bin/stable_token"})).json()
    assert [record["body"]["appid"] for record in records["records"]] == [APPID]
    assert (await http.delete("/sim/records")).status == 200 and state.records() == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sim/apps", {"appid": "wxnew"}),
        ("/sim/followers", {"appid": "wxnope", "openid": "o"}),
        ("/sim/interactions", {"appid": APPID, "openid": "o-unknown"}),
        ("/sim/grants", ["not", "an", "object"]),
        ("/sim/errors", {"endpoint": "x", "errcode": "40001"}),
        ("/sim/errors", {"endpoint": "x", "errcode": 0, "delay": 61}),
        ("/sim/errors", {"endpoint": "x", "errcode": 0, "delay": "1"}),
        ("/sim/clock", {"seconds": -5}),
        ("/sim/templates", {"appid": APPID, "template_id": "t", "keys": "thing1"}),
    ],
)
async def test_control_routes_reject_bad_input_and_change_nothing(
    http: TestClient, state: SimState, path: str, body: Any
) -> None:
    def snapshot() -> tuple[Any, ...]:
        return (
            dict(state.apps),
            dict(state.users),
            dict(state.windows),
            dict(state.grants),
            dict(state.injected),
            state.clock_offset,
        )

    before = snapshot()
    response = await http.post(path, json=body)
    assert response.status == 400
    assert (await response.json())["error"]
    assert snapshot() == before
    assert "tmpl-1" in state.apps[APPID].templates and "t" not in state.apps[APPID].templates
