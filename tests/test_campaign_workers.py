"""Never twice, with real processes: `memberbot worker` (arq on real Redis) sending a subscribe-message
campaign to a `memberbot wechat-sim` over HTTP. A worker killed mid-send (twice) and restarted resends
what was in flight under the same client_msg_id, which the simulator answers 45065: every recipient is
delivered exactly once. Two workers share one campaign's send tasks and together deliver each once."""

from __future__ import annotations

import os
import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from arq import ArqRedis

from bot.settings import Settings
from bot.worker import arq_dispatch, sweep_effects
from handlers import effects
from handlers.campaigns import manage, report
from handlers.campaigns.manage import Draft
from handlers.campaigns.sending import CAMPAIGN_PLAN, CAMPAIGN_SEND
from handlers.core.tasks import Effects
from models.campaign import Campaign, CampaignState
from models.member import Member
from models.merchant import Merchant
from models.notice import SubscribeGrant
from models.task import Task, TaskStatus
from tests.conftest import real_redis
from tests.support.factories import make_merchant
from tests.test_notice_workers import Processes, Sim, both_polling, pool, processes, wait_for

pytestmark = [real_redis, pytest.mark.slow]
__all__ = ["pool"]  # the arq pool fixture, shared with the notice workers' tests
SEND = "cgi-bin/message/subscribe/send"
TEMPLATE = "TPL-PROMO"
FIELDS = {"thing1": "{{ member_name }}，会员日到啦", "thing2": "{{ merchant_name }}"}


async def world(sim: Sim, count: int) -> tuple[Merchant, list[int]]:
    """A merchant at any hour and `count` mini-program members, each with one grant (ours, WeChat's)."""
    merchant = await make_merchant("shop")
    await Merchant.filter(id=merchant.id).update(quiet_start_minute=0, quiet_end_minute=0)
    await sim.post("/sim/apps", {"appid": merchant.mp_appid, "secret": merchant.mp_secret})
    await sim.post("/sim/templates", {"appid": merchant.mp_appid, "template_id": TEMPLATE})
    openids = [f"mp-{n}" for n in range(count)]
    await Member.bulk_create(
        [
            Member(merchant_id=merchant.id, code=f"W{n:07d}", mp_openid=openid, name=f"会员{n}")
            for n, openid in enumerate(openids)
        ]
    )
    ids = [m.id for m in await Member.filter(merchant_id=merchant.id).order_by("id")]
    now = datetime.now(UTC)
    await SubscribeGrant.bulk_create(
        [
            SubscribeGrant(
                merchant_id=merchant.id, member_id=i, template_id=TEMPLATE, accepted=1, updated_at=now
            )
            for i in ids
        ]
    )
    await sim.post(
        "/sim/bulk/grants", {"appid": merchant.mp_appid, "template_id": TEMPLATE, "openids": openids}
    )
    return await Merchant.get(id=merchant.id), ids


async def launch(registry: Effects, merchant: Merchant) -> Campaign:
    draft = Draft(
        name="会员日",
        channel="subscribe",
        content={"fields": FIELDS},
        template_id=TEMPLATE,
        holdout_pct=0,
        throttle_per_second=2000,
    )
    campaign = await manage.create(merchant, draft, actor="test")
    now = datetime.now(UTC)
    await manage.validate(merchant, campaign.id, actor="test", now=now)
    return await manage.schedule(merchant, campaign.id, registry, at=None, actor="test", now=now)


async def deliveries(http: aiohttp.ClientSession, sim_url: str, campaign: Campaign) -> dict[str, Any]:
    params = {"endpoint": SEND, "prefix": f"c{campaign.id}-"}
    async with http.get(f"{sim_url}/sim/deliveries", params=params) as response:
        counted: dict[str, Any] = await response.json()
        return counted


def done(campaign: Campaign) -> Any:
    async def check() -> bool:
        return (await Campaign.get(id=campaign.id)).state == CampaignState.DONE

    return check


async def crash(running: Processes, worker: Any, registry: Effects, pool: ArqRedis, name: str) -> Any:
    """SIGKILL `worker`; its tasks' leases lapse (moved, not waited for: two minutes); a new worker starts
    and the sweep hands it the due tasks."""
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    lapsed = datetime.now(UTC) - timedelta(seconds=1)
    await Task.filter(kind__in=(CAMPAIGN_PLAN, CAMPAIGN_SEND), status=TaskStatus.RUNNING).update(
        lease_until=lapsed
    )
    restarted = running.worker(name)
    await sweep_effects({"effects": registry, "redis": pool})
    return restarted


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq 0.28 on redis 5
async def test_a_worker_killed_twice_mid_campaign_delivers_each_message_once(
    pool: ArqRedis, settings: Settings, tmp_path: Path
) -> None:
    count = 900
    registry = effects.build(dispatch=arq_dispatch(pool))
    with processes(settings, tmp_path) as running:
        async with aiohttp.ClientSession() as http:
            sim = Sim(http, running.sim_url)
            await sim.wait_up(running)
            merchant, _ = await world(sim, count)
            # WeChat takes each message at once and answers 3 s later: the worker dies waiting for some.
            await sim.post("/sim/errors", {"endpoint": SEND, "errcode": 0, "delay": 3, "times": 100})
            first = running.worker("worker-1")
            campaign = await launch(registry, merchant)

            async def some_in_flight() -> bool:
                return (await deliveries(http, running.sim_url, campaign))["delivered"] >= 50

            await wait_for(some_in_flight, running, "no sends reached the simulator")
            second = await crash(running, first, registry, pool, "worker-2")
            await sim.post("/sim/errors", {"endpoint": SEND, "errcode": 0, "delay": 3, "times": 100})

            async def more_in_flight() -> bool:
                return (await deliveries(http, running.sim_url, campaign))["delivered"] >= 300

            await wait_for(more_in_flight, running, "the restarted worker sent nothing")
            await crash(running, second, registry, pool, "worker-3")
            await wait_for(done(campaign), running, "the campaign did not finish after two crashes", 120)
            counted = await deliveries(http, running.sim_url, campaign)

    assert (counted["delivered"], counted["unique"], counted["duplicates"]) == (count, count, 0)
    assert counted["refused"] >= 2  # in flight at a crash: resent, answered 45065 (already delivered)
    counts = await report.counts(campaign.id)
    assert counts["sent"] == count and counts["sending"] == counts["pending"] == 0


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq 0.28 on redis 5
async def test_two_workers_share_one_campaign_and_deliver_each_once(
    pool: ArqRedis, settings: Settings, tmp_path: Path
) -> None:
    count = 6000  # twelve send tasks of 500: more than one worker takes at once (arq max_jobs)
    registry = effects.build(dispatch=arq_dispatch(pool))
    with processes(settings, tmp_path) as running:
        async with aiohttp.ClientSession() as http:
            sim = Sim(http, running.sim_url)
            await sim.wait_up(running)
            merchant, _ = await world(sim, count)
            # Slow answers keep sends in flight, so both workers are busy at once.
            await sim.post("/sim/errors", {"endpoint": SEND, "errcode": 0, "delay": 0.3, "times": 3000})
            running.worker("worker-1")
            running.worker("worker-2")
            await wait_for(lambda: both_polling(running), running, "the workers did not start")
            campaign = await launch(registry, merchant)
            await wait_for(done(campaign), running, "the campaign did not finish", 120)
            counted = await deliveries(http, running.sim_url, campaign)
            logs = running.log("worker-1"), running.log("worker-2")

    assert all(re.search(r"run_tasks?\(", log) for log in logs), "both workers ran send tasks"
    assert (counted["delivered"], counted["unique"], counted["duplicates"], counted["refused"]) == (
        count,
        count,
        0,
        0,
    )
