"""`/sim/...` control routes (JSON): the HTTP face of `SimState`'s set-up and inspection methods.

Bad input answers 400 `{"error": "..."}` and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.wechat_sim.api import SIM_STATE
from bot.wechat_sim.state import SimState

Body = dict[str, Any]
Control = Callable[[SimState, Body], Any]


def _str(body: Body, name: str, *, required: bool = True) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: a non-empty string is required")
    return value


def _int(body: Body, name: str, default: int) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name}: an integer is required")
    return value


def _add_app(state: SimState, body: Body) -> Body:
    state.add_app(_str(body, "appid"), _str(body, "secret"))
    return {}


def _add_follower(state: SimState, body: Body) -> Body:
    following = body.get("following", True)
    if not isinstance(following, bool):
        raise ValueError("following: true or false")
    state.add_follower(
        _str(body, "appid"), _str(body, "openid"), _str(body, "unionid", required=False), following=following
    )
    return {}


def _interact(state: SimState, body: Body) -> Body:
    state.interact(_str(body, "appid"), _str(body, "openid"))
    return {}


def _add_template(state: SimState, body: Body) -> Body:
    keys = body.get("keys")
    if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) and k for k in keys)):
        raise ValueError("keys: a list of non-empty strings")
    template_keys = tuple(keys) if keys is not None else None
    state.add_template(_str(body, "appid"), _str(body, "template_id"), template_keys)
    return {}


def _grant(state: SimState, body: Body) -> Body:
    state.grant(_str(body, "appid"), _str(body, "openid"), _str(body, "template_id"), _int(body, "count", 1))
    return {}


def _mint_code(state: SimState, body: Body) -> Body:
    return {
        "code": state.mint_code(
            _str(body, "appid"), _str(body, "openid"), _str(body, "unionid", required=False)
        )
    }


def _inject(state: SimState, body: Body) -> Body:
    errcode = body.get("errcode")
    if not isinstance(errcode, int) or isinstance(errcode, bool):
        raise ValueError("errcode: an integer is required")
    errmsg = body.get("errmsg", "injected error")
    if not isinstance(errmsg, str):
        raise ValueError("errmsg: a string")
    delay = body.get("delay", 0)
    if not isinstance(delay, int | float) or isinstance(delay, bool):
        raise ValueError("delay: a number of seconds")
    state.inject_error(
        _str(body, "endpoint"),
        errcode,
        errmsg,
        times=_int(body, "times", 1),
        status=_int(body, "status", 200),
        delay=float(delay),
    )
    return {}


def _expire(state: SimState, body: Body) -> Body:
    state.expire_token(_str(body, "appid"))
    return {}


def _invalidate(state: SimState, body: Body) -> Body:
    state.invalidate_token(_str(body, "appid"))
    return {}


def _advance(state: SimState, body: Body) -> Body:
    seconds = body.get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        raise ValueError("seconds: a number is required")
    state.advance(float(seconds))
    return {}


POSTS: dict[str, Control] = {
    "/sim/apps": _add_app,
    "/sim/followers": _add_follower,
    "/sim/interactions": _interact,
    "/sim/templates": _add_template,
    "/sim/grants": _grant,
    "/sim/codes": _mint_code,
    "/sim/errors": _inject,
    "/sim/tokens/expire": _expire,
    "/sim/tokens/invalidate": _invalidate,
    "/sim/clock": _advance,
}


def _post(control: Control) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("a JSON object is required")
            answer = control(request.app[SIM_STATE], body)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True, **answer})

    return serve


async def get_records(request: web.Request) -> web.Response:
    return web.json_response({"records": request.app[SIM_STATE].records(request.query.get("endpoint"))})


async def clear_records(request: web.Request) -> web.Response:
    request.app[SIM_STATE].clear_records()
    return web.json_response({"ok": True})


async def get_stats(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    return web.json_response(
        {"force_refreshes": {appid: len(app.force_refreshes) for appid, app in state.apps.items()}}
    )


def add_control_routes(app: web.Application) -> None:
    for path, control in POSTS.items():
        app.router.add_post(path, _post(control))
    app.router.add_get("/sim/records", get_records)
    app.router.add_delete("/sim/records", clear_records)
    app.router.add_get("/sim/stats", get_stats)
