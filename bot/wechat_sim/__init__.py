"""A loopback WeChat API simulator for development, demos and tests.

It emulates the endpoints memberbot calls — `cgi-bin/stable_token`, `cgi-bin/message/custom/send`,
`cgi-bin/message/template/send`, `cgi-bin/message/subscribe/send`, `cgi-bin/qrcode/create`,
`cgi-bin/showqrcode`, `cgi-bin/media/upload`, `cgi-bin/user/info`, `cgi-bin/menu/create` and
`cgi-bin/menu/get` (`menu.py`), `sns/jscode2session` and `wxa/getwxacodeunlimit` — with WeChat's
validation and error codes, and records every request. It runs on its own port (`memberbot wechat-sim`;
point `WECHAT_API_BASE` at it) or, in demo mode without `WECHAT_API_BASE`, mounted in the memberbot app
under `/wechat-sim` (`bot.app.mount_wechat_sim`). The README lists the control routes; set it up through
`SimState` (in-process) or `/sim/...`:

    POST /sim/apps {appid, secret}                 POST /sim/followers {appid, openid, unionid?, following?}
    POST /sim/interactions {appid, openid}         POST /sim/templates {appid, template_id, keys?}
    POST /sim/grants {appid, openid, template_id, count?}
    POST /sim/codes {appid, openid, unionid?} → {code}
    POST /sim/errors {endpoint, errcode, errmsg?, times?, status?, delay?}
    POST /sim/tokens/expire {appid}                POST /sim/tokens/invalidate {appid}
    POST /sim/clock {seconds}                      GET /sim/stats → {force_refreshes: {appid: n}}
    GET /sim/records?endpoint=cgi-bin/stable_token DELETE /sim/records
    Campaigns (`campaigns.py`): message/mass/send, mass/sendall, mass/get, mass/preview; POST /tencent-sms/
    (Tencent Cloud SendSms, TC3-verified); POST /sim/sms/keys, GET /sim/mass/jobs, GET /sim/deliveries,
    POST /sim/bulk/grants
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bot.wechat_sim.api import SIM_STATE, add_api_routes
from bot.wechat_sim.campaigns import add_campaign_routes
from bot.wechat_sim.control import add_control_routes
from bot.wechat_sim.media import add_media_routes
from bot.wechat_sim.state import SimError, SimState

__all__ = ["SIM_STATE", "SimAccessLogger", "SimError", "SimState", "create_sim_app", "run_simulator"]


class SimAccessLogger(AbstractAccessLogger):
    """Method, path and status only: query strings carry access tokens and secrets."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status, time * 1000)


def create_sim_app(state: SimState | None = None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[SIM_STATE] = state if state is not None else SimState()
    add_api_routes(app)
    add_media_routes(app)
    add_control_routes(app)
    add_campaign_routes(app, SIM_STATE)
    return app


def run_simulator(*, host: str = "127.0.0.1", port: int = 8090) -> None:
    log = logging.getLogger("memberbot.wechat_sim")
    log.info("WeChat API simulator on http://%s:%s (set WECHAT_API_BASE to it)", host, port)
    web.run_app(
        create_sim_app(), host=host, port=port, print=None, access_log_class=SimAccessLogger, access_log=log
    )
