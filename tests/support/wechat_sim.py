"""Pytest plugin: the `wechat_sim` fixture runs the WeChat API simulator on a free loopback port.

Usage (registered in tests/conftest.py through `pytest_plugins`):

    async def test_login(aiohttp_client, make_app, wechat_sim: WeChatSim) -> None:
        wechat_sim.add_app("wxmp0001", "mp-secret")
        code = wechat_sim.mint_code("wxmp0001", "o-mp-user", unionid="u-1")
        client = await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))
        ...
        assert wechat_sim.records("sns/jscode2session")[-1]["errcode"] == 0

`WeChatSim` API (stable; other suites rely on it):
- `url`: the base URL to pass as `wechat_api_base`; `state`: the live `bot.wechat_sim.SimState`.
- `add_app(appid, secret)`: register an Official Account or mini-program.
- `add_follower(appid, openid, unionid=None, following=True)`: a known user (`following=False`: unfollowed).
- `interact(appid, openid)`: the user messaged the account (48-hour customer-service window, 5 messages).
- `add_template(appid, template_id, keys=None)`, `grant(appid, openid, template_id, count=1)`.
- `mint_code(appid, openid, unionid=None) -> str`: a single-use jscode2session code (valid 5 minutes).
- `inject_error(endpoint, errcode, errmsg=..., times=1, status=200, delay=0)`: the next calls to
  `endpoint` (e.g. "cgi-bin/message/custom/send") fail; `status` >= 500 answers a non-JSON HTTP error;
  `delay` holds the answer back that many seconds (with errcode 0: the call succeeds, only late).
- `expire_token(appid)`, `invalidate_token(appid)`, `advance(seconds)` (the simulator's clock).
- `records(endpoint=None) -> list[dict]`: requests received (endpoint, method, query, body, raw,
  errcode, at); `clear_records()`; `force_refresh_count(appid=None)`.
- On `state`: `qrcodes` (ticket → appid, action_name, scene, url, expires_at), `media` (media_id →
  `SimMedia`), `permanent_qr_limit` (WeChat's 100,000 permanent QR codes per account).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bot.wechat_sim import SimAccessLogger, SimState, create_sim_app


class WeChatSim:
    def __init__(self, server: TestServer, state: SimState) -> None:
        self.server = server
        self.state = state
        self.url = str(server.make_url("")).rstrip("/")

    def add_app(self, appid: str, secret: str) -> None:
        self.state.add_app(appid, secret)

    def add_follower(
        self, appid: str, openid: str, unionid: str | None = None, *, following: bool = True
    ) -> None:
        self.state.add_follower(appid, openid, unionid, following=following)

    def interact(self, appid: str, openid: str) -> None:
        self.state.interact(appid, openid)

    def add_template(self, appid: str, template_id: str, keys: tuple[str, ...] | None = None) -> None:
        self.state.add_template(appid, template_id, keys)

    def grant(self, appid: str, openid: str, template_id: str, count: int = 1) -> None:
        self.state.grant(appid, openid, template_id, count)

    def mint_code(self, appid: str, openid: str, unionid: str | None = None) -> str:
        return self.state.mint_code(appid, openid, unionid)

    def inject_error(
        self,
        endpoint: str,
        errcode: int,
        errmsg: str = "injected error",
        *,
        times: int = 1,
        status: int = 200,
        delay: float = 0.0,
    ) -> None:
        self.state.inject_error(endpoint, errcode, errmsg, times=times, status=status, delay=delay)

    def expire_token(self, appid: str) -> None:
        self.state.expire_token(appid)

    def invalidate_token(self, appid: str) -> None:
        self.state.invalidate_token(appid)

    def advance(self, seconds: float) -> None:
        self.state.advance(seconds)

    def records(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return self.state.records(endpoint)

    def clear_records(self) -> None:
        self.state.clear_records()

    def force_refresh_count(self, appid: str | None = None) -> int:
        return self.state.force_refresh_count(appid)


@pytest.fixture
async def wechat_sim() -> AsyncIterator[WeChatSim]:
    state = SimState()
    server = TestServer(create_sim_app(state), host="127.0.0.1")
    await server.start_server(access_log_class=SimAccessLogger)
    try:
        yield WeChatSim(server, state)
    finally:
        await server.close()
