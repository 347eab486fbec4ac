"""Demo mode without WECHAT_API_BASE: the app serves the WeChat simulator itself, under /wechat-sim, and its
WeChat client calls it over the app's own loopback URL (what `make run` gives a newcomer)."""

from __future__ import annotations

import logging
from typing import Any

import pydantic
import pytest

from bot.demo import DEMO, seed_demo
from bot.settings import WECHAT_API, Settings
from handlers.wechat.client import AppCredentials
from models.member import Member
from tests.conftest import SECRET
from webhooks.appkeys import WECHAT


async def demo_client(aiohttp_client: Any, make_app: Any, port: int) -> Any:
    """The app as `make run` builds it (DEMO=1, no WECHAT_API_BASE), serving on HOST:PORT."""
    app = make_app(demo=True, wechat_api_base="", host="127.0.0.1", port=port)
    return await aiohttp_client(app, server_kwargs={"host": "127.0.0.1", "port": port})


async def test_a_demo_member_logs_in_with_a_code_from_the_in_process_simulator(
    aiohttp_client: Any, make_app: Any, unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    port = unused_tcp_port
    with caplog.at_level(logging.INFO, logger="bot.app"):
        client = await demo_client(aiohttp_client, make_app, port)
    assert any("serves the WeChat API in-process" in record.getMessage() for record in caplog.records)
    assert client.app[WECHAT].api_base == f"http://127.0.0.1:{port}/wechat-sim"
    await seed_demo(if_empty=True)

    minted = await client.post("/wechat-sim/sim/codes", json={"appid": DEMO.mp_appid, "openid": "o-newcomer"})
    assert minted.status == 200
    code = (await minted.json())["code"]
    login = await client.post("/api/mp/demo/login", json={"code": code})
    assert login.status == 200
    body = await login.json()
    member = await Member.get(mp_openid="o-newcomer")
    assert body["member"]["code"] == member.code
    me = await client.get("/api/mp/demo/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status == 200
    assert (await me.json())["code"] == member.code

    records = await client.get("/wechat-sim/sim/records", params={"endpoint": "sns/jscode2session"})
    [redeemed] = (await records.json())["records"]
    assert redeemed["query"]["appid"] == DEMO.mp_appid
    assert redeemed["query"]["js_code"] == code
    assert redeemed["errcode"] == 0

    again = await client.post("/api/mp/demo/login", json={"code": code})  # WeChat codes are single use
    assert again.status == 401
    assert (await again.json())["error"]["code"] == "invalid_login_code"


async def test_the_in_process_simulator_knows_the_demo_official_account(
    aiohttp_client: Any, make_app: Any, unused_tcp_port: int
) -> None:
    client = await demo_client(aiohttp_client, make_app, unused_tcp_port)
    added = await client.post(
        "/wechat-sim/sim/followers", json={"appid": DEMO.oa_appid, "openid": "o-fan", "unionid": "u-fan"}
    )
    assert added.status == 200
    oa = AppCredentials(DEMO.oa_appid, DEMO.oa_secret)
    assert await client.app[WECHAT].user_unionid(oa, "o-fan") == "u-fan"  # a stable_token, then user/info
    tokens = await client.get("/wechat-sim/sim/records", params={"endpoint": "cgi-bin/stable_token"})
    assert [record["errcode"] for record in (await tokens.json())["records"]] == [0]


async def test_simulator_control_routes_keep_json_errors(
    aiohttp_client: Any, make_app: Any, unused_tcp_port: int
) -> None:
    client = await demo_client(aiohttp_client, make_app, unused_tcp_port)
    unknown = await client.post("/wechat-sim/sim/codes", json={"appid": "wxnotregistered", "openid": "o-1"})
    assert unknown.status == 400
    assert "wxnotregistered" in (await unknown.json())["error"]
    broken = await client.post("/wechat-sim/sim/codes", data=b"{not json")
    assert broken.status == 400
    nowhere = await client.get("/wechat-sim/nope")
    assert nowhere.status == 404
    assert (await nowhere.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("overrides", "api_base"),
    [
        ({"demo": False, "wechat_api_base": ""}, WECHAT_API),
        ({"demo": True, "wechat_api_base": "http://127.0.0.1:9"}, "http://127.0.0.1:9"),
        ({"demo": False, "wechat_api_base": "http://127.0.0.1:9"}, "http://127.0.0.1:9"),
    ],
)
async def test_no_simulator_outside_demo_mode_or_with_an_explicit_wechat_api_base(
    aiohttp_client: Any, make_app: Any, overrides: dict[str, Any], api_base: str
) -> None:
    client = await aiohttp_client(make_app(**overrides))
    assert client.app[WECHAT].api_base == api_base
    for response in (
        await client.post("/wechat-sim/sim/codes", json={"appid": DEMO.mp_appid, "openid": "o-1"}),
        await client.get("/wechat-sim/sim/stats"),
        await client.get("/wechat-sim/sns/jscode2session"),
    ):
        assert response.status == 404


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built here see only what each test passes."""
    for name in ("WECHAT_API_BASE", "DEMO", "HOST", "PORT", "WORKERS", "DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.usefixtures("environ")
def test_an_unset_wechat_api_base_is_the_real_wechat_outside_demo_mode() -> None:
    settings = Settings(secret_key=SECRET)
    assert settings.wechat_api_base == WECHAT_API
    assert settings.wechat_api_url() == WECHAT_API
    assert not settings.wechat_sim_in_process
    assert (
        Settings(secret_key=SECRET, wechat_api_base="http://sim:8090/").wechat_api_url() == "http://sim:8090"
    )


@pytest.mark.usefixtures("environ")
@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8080, "http://127.0.0.1:8080/wechat-sim"),
        ("0.0.0.0", 9000, "http://127.0.0.1:9000/wechat-sim"),  # noqa: S104 - a setting, not a bind
        ("::", 8080, "http://[::1]:8080/wechat-sim"),
        ("::1", 8080, "http://[::1]:8080/wechat-sim"),
        ("localhost", 8081, "http://localhost:8081/wechat-sim"),
    ],
)
def test_an_unset_wechat_api_base_in_demo_mode_is_the_apps_own_simulator(
    host: str, port: int, url: str
) -> None:
    settings = Settings(demo=True, host=host, port=port)
    assert settings.wechat_sim_in_process
    assert settings.wechat_api_url() == url


@pytest.mark.usefixtures("environ")
def test_an_explicit_wechat_api_base_wins_in_demo_mode() -> None:
    settings = Settings(demo=True, wechat_api_base="https://api.weixin.qq.com")
    assert not settings.wechat_sim_in_process
    assert settings.wechat_api_url() == WECHAT_API


@pytest.mark.usefixtures("environ")
def test_several_workers_cannot_share_the_in_process_simulator() -> None:
    shared = {"database_url": "postgres://db/memberbot", "redis_url": "redis://redis:6379/0", "workers": 2}
    with pytest.raises(pydantic.ValidationError, match="WORKERS > 1 needs WECHAT_API_BASE"):
        Settings(demo=True, **shared)
    assert Settings(demo=True, wechat_api_base="http://sim:8090", **shared).workers == 2
