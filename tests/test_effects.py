"""Durable side effects: queued with their cause, run after commit, retried until they succeed."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from handlers import effects
from handlers.core import tasks
from handlers.core.tasks import MAX_ATTEMPTS, Effects
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import tiers
from handlers.loyalty.ledger_audit import audit_points
from handlers.members import lookup as members
from handlers.till.purchase import AFTER_PURCHASE, PurchaseRequest, after_purchase, record_purchase
from models.points import PointsAccount, PointsKind, PointsTransaction
from models.task import Task, TaskStatus
from tests.support.factories import make_member, make_merchant

LADDER = [
    {"code": "normal", "name": "普通会员", "rank": 0},
    {
        "code": "silver",
        "name": "银卡",
        "rank": 1,
        "criteria": {"spend_fen": 50_000, "window_days": 365},
        "benefits": {"upgrade_gift_points": 30},
    },
]


def flaky(real: tasks.Handler, failures: int, calls: list[int]) -> tasks.Handler:
    """`real`, failing its first `failures` runs (a database or WeChat outage)."""

    async def handler(registry: Effects, payload: Mapping[str, Any], now: datetime) -> Any:
        calls.append(1)
        if len(calls) <= failures:
            raise RuntimeError("service down")
        return await real(registry, payload, now)

    return handler


def registry_with(kind: str, handler: tasks.Handler) -> Effects:
    return Effects({**effects.build().handlers, kind: handler}, inline=effects.INLINE)


async def test_a_purchase_stands_when_its_effect_fails_and_the_retry_lands_the_upgrade(client: Any) -> None:
    merchant = await make_merchant()
    await loyalty_config.save_tiers(merchant.id, LADDER, actor="test")
    member = await make_member(merchant)
    calls: list[int] = []
    registry = registry_with(AFTER_PURCHASE, flaky(after_purchase, 1, calls))
    now = datetime.now(UTC)
    request = PurchaseRequest("big", member.id, 60_000)
    first = await record_purchase(merchant, None, request, now=now, effects=registry)
    assert first.tier_changed_to is None and await tiers.tier_code(merchant.id, member.id) == "normal"
    task = await Task.get(kind=AFTER_PURCHASE)
    assert (task.status, task.attempts) == (TaskStatus.PENDING, 1)
    await registry.run_due(now)
    assert (await Task.get(id=task.id)).status == TaskStatus.PENDING  # its backoff has not passed
    await registry.run_due(now + timedelta(minutes=5))
    assert (await Task.get(id=task.id)).status == TaskStatus.DONE
    assert await tiers.tier_code(merchant.id, member.id) == "silver"
    replay = await record_purchase(merchant, None, request, now=now, effects=registry)
    assert replay.replayed and replay.tier_changed_to == "silver" and replay.tier_gift_points == 30
    assert await PointsTransaction.filter(member_id=member.id, kind=PointsKind.EARN_TIER_GIFT).count() == 1
    assert len(calls) == 2 and await audit_points() == []


async def test_an_effect_whose_process_died_runs_once_its_lease_lapses(client: Any) -> None:
    """A member created (its `member.registered` claimed to run inline) by a process that died before
    running it gets the registration bonus from the sweep, once the claim's lease has lapsed."""
    merchant = await make_merchant()
    await loyalty_config.save_program(merchant.id, {"registration_bonus": 40}, actor="test")
    member = await members.create_member(merchant, openid="o-orphan", subscribed=True)
    registry = effects.build()
    now = datetime.now(UTC)
    assert await registry.run_due(now) == {
        "done": 0,
        "failed": 0,
        "deferred": 0,
    }  # still leased to its creator
    assert await PointsAccount.get_or_none(member_id=member.id) is None
    assert await registry.run_due(now + tasks.LEASE + timedelta(seconds=1)) == {
        "done": 1,
        "failed": 0,
        "deferred": 0,
    }
    assert (await PointsAccount.get(member_id=member.id)).balance == 40
    assert await registry.run_due(now + timedelta(hours=1)) == {"done": 0, "failed": 0, "deferred": 0}
    assert (await PointsAccount.get(member_id=member.id)).balance == 40


async def test_concurrent_runners_run_a_task_once(client: Any) -> None:
    merchant = await make_merchant()
    runs: list[int] = []

    async def count(registry: Effects, payload: Mapping[str, Any], now: datetime) -> None:
        runs.append(payload["n"])
        await asyncio.sleep(0.05)  # long enough for every other runner to try its claim

    registry = Effects({"test.count": count})
    async with in_transaction():
        queued = await registry.queue("test.count", "once", {"n": 7}, merchant_id=merchant.id)
    assert queued.id is not None
    await asyncio.gather(*(registry.run(queued.id) for _ in range(8)), registry.run_due(datetime.now(UTC)))
    assert runs == [7]
    assert (await Task.get(id=queued.id)).status == TaskStatus.DONE


async def test_the_same_effect_is_queued_once_however_often_its_cause_retries(client: Any) -> None:
    merchant = await make_merchant()
    registry = Effects({"test.noop": lambda *_: asyncio.sleep(0)})  # type: ignore[arg-type, return-value]
    async with in_transaction():
        first = await registry.queue("test.noop", "k", {}, merchant_id=merchant.id)
        again = await registry.queue("test.noop", "k", {}, merchant_id=merchant.id)
    assert first.id is not None and again.id is None
    with pytest.raises(ValueError, match="no handler"):
        await registry.queue("test.unknown", "k", {}, merchant_id=merchant.id)


async def test_an_effect_failing_every_time_is_left_dead_after_its_attempts(client: Any) -> None:
    merchant = await make_merchant()
    runs: list[int] = []

    async def broken(registry: Effects, payload: Mapping[str, Any], now: datetime) -> None:
        runs.append(1)
        raise RuntimeError("never works")

    registry = Effects({"test.broken": broken})
    async with in_transaction():
        queued = await registry.queue("test.broken", "k", {}, merchant_id=merchant.id)
    now = datetime.now(UTC)
    for _ in range(MAX_ATTEMPTS + 3):
        await registry.run_due(now)
        now += timedelta(days=1)
    task = await Task.get(id=queued.id)
    assert (task.status, task.attempts, len(runs)) == (TaskStatus.DEAD, MAX_ATTEMPTS, MAX_ATTEMPTS)
    assert "never works" in task.last_error


def test_backoff_grows_and_is_bounded() -> None:
    waits = [tasks.backoff(n).total_seconds() for n in range(1, 15)]
    assert waits[0] >= 10 and all(a <= b * 1.1 for a, b in itertools.pairwise(waits))
    assert max(waits) <= 3600 * 1.1
