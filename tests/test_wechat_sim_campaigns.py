"""The simulator's campaign endpoints: mass send's checks and quotas, subscribe anti-replay, bulk set-up
and the delivery counts the benchmark relies on."""

from __future__ import annotations

from typing import Any

import aiohttp

from bot.wechat_sim.campaigns import finish_event
from tests.support.wechat_sim import WeChatSim

OA, MP = ("wxsimoa", "oa-secret"), ("wxsimmp", "mp-secret")


async def token(http: aiohttp.ClientSession, url: str, app: tuple[str, str]) -> str:
    body = {"grant_type": "client_credential", "appid": app[0], "secret": app[1]}
    async with http.post(f"{url}/cgi-bin/stable_token", json=body) as response:
        return str((await response.json())["access_token"])


async def call(
    http: aiohttp.ClientSession, url: str, path: str, tok: str, body: dict[str, Any]
) -> dict[str, Any]:
    async with http.post(f"{url}/{path}", params={"access_token": tok}, json=body) as response:
        answer: dict[str, Any] = await response.json()
        return answer


def mass(openids: list[str], client_id: str = "c1") -> dict[str, Any]:
    return {"touser": openids, "msgtype": "text", "text": {"content": "周末会员日"}, "clientmsgid": client_id}


async def test_mass_send_checks_replays_and_quotas(wechat_sim: WeChatSim) -> None:
    wechat_sim.add_app(*OA)
    for n in range(6):
        wechat_sim.add_follower(OA[0], f"o{n}")
    async with aiohttp.ClientSession() as http:
        tok = await token(http, wechat_sim.url, OA)
        send = "cgi-bin/message/mass/send"
        assert (await call(http, wechat_sim.url, send, tok, mass(["o1"])))["errcode"] == 40130
        assert (await call(http, wechat_sim.url, send, tok, mass(["o1", "o2"], "x" * 65)))["errcode"] == 45067
        first = await call(http, wechat_sim.url, send, tok, mass(["o1", "o2"]))
        assert first["errcode"] == 0
        again = await call(http, wechat_sim.url, send, tok, mass(["o1", "o2"]))
        assert (again["errcode"], again["msg_id"]) == (45065, first["msg_id"])
        for n in range(4):  # o1 and o2: their 2nd … 5th mass message this month
            await call(http, wechat_sim.url, send, tok, mass(["o1", "o2"], f"m{n}"))
        jobs = list(wechat_sim.state.campaigns.mass_jobs.values())
        assert [(j.sent, j.errors) for j in jobs] == [(2, 0), (2, 0), (2, 0), (2, 0), (0, 2)]
        assert "<SentCount>0</SentCount><ErrorCount>2</ErrorCount>" in finish_event(
            wechat_sim.state, jobs[-1].msg_id, "gh_account"
        )
        wechat_sim.state.campaigns.mass_daily_limit = 5
        assert (await call(http, wechat_sim.url, send, tok, mass(["o3", "o4"], "q")))["errcode"] == 45028
        wechat_sim.state.campaigns.mass_daily_limit = 10_000
        for n in range(60 - 6):
            await call(http, wechat_sim.url, send, tok, mass(["o3", "o4"], f"r{n}"))
        assert (await call(http, wechat_sim.url, send, tok, mass(["o3", "o4"], "z")))["errcode"] == 45009
        status = await call(
            http, wechat_sim.url, "cgi-bin/message/mass/get", tok, {"msg_id": first["msg_id"]}
        )
        assert status["msg_status"] == "SEND_SUCCESS"


async def test_subscribe_anti_replay_bulk_grants_and_delivery_counts(wechat_sim: WeChatSim) -> None:
    wechat_sim.add_app(*MP)
    wechat_sim.add_template(MP[0], "TPL")
    async with aiohttp.ClientSession() as http:
        bulk = {"appid": MP[0], "template_id": "TPL", "openids": ["a", "b"], "count": 2}
        async with http.post(f"{wechat_sim.url}/sim/bulk/grants", json=bulk) as response:
            assert response.status == 200
        tok = await token(http, wechat_sim.url, MP)
        send = "cgi-bin/message/subscribe/send"
        body = {"template_id": "TPL", "data": {"thing1": {"value": "会员日"}}}
        for touser, client_id in (("a", "c9-m1"), ("a", "c9-m1"), ("b", "c9-m2"), ("b", "other")):
            await call(
                http, wechat_sim.url, send, tok, {**body, "touser": touser, "client_msg_id": client_id}
            )
        assert wechat_sim.state.grants[(MP[0], "a", "TPL")] == 1  # the repeat used no grant
        params = {"endpoint": send, "prefix": "c9-"}
        async with http.get(f"{wechat_sim.url}/sim/deliveries", params=params) as response:
            counted = await response.json()
    assert (counted["delivered"], counted["unique"], counted["duplicates"], counted["refused"]) == (
        2,
        2,
        0,
        1,
    )
