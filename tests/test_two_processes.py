"""Two real `memberbot serve` processes on one PostgreSQL + Redis: concurrent purchases and refunds on
one member, split across both, keep every idempotency key to one purchase and the ledger exact."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.settings import Settings
from handlers.staff.accounts import create_staff
from models.points import PointsAccount
from models.purchase import Purchase, PurchaseStatus
from tests.conftest import SECRET, real_redis
from tests.support.factories import make_member, make_merchant

pytestmark = [real_redis, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
UNIQUE = 240
REPEATED = 40  # keys sent twice, once to each process
REFUNDED = 40
PASSWORD = "correct-horse-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(settings: Settings, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": SECRET,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "WECHAT_API_BASE": "http://127.0.0.1:9",
    }


@contextmanager
def servers(settings: Settings, tmp_path: Path, count: int) -> Iterator[list[str]]:
    processes: list[subprocess.Popen[bytes]] = []
    try:
        urls = []
        for n in range(count):
            port = free_port()
            with (tmp_path / f"serve-{n}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bot", "serve"],
                        env=server_env(settings, port),
                        cwd=ROOT,
                        stdout=log,
                        stderr=log,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_healthy(session: aiohttp.ClientSession, url: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{url}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} not healthy within 20 s:\n{server_logs(tmp_path)}")


def server_logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(tmp_path.glob("serve-*.log")))


async def post(session: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.post(url, json=body, headers=headers) as response:
        payload: dict[str, Any] = await response.json()
        assert response.status == 200, payload
        return payload


async def test_concurrent_purchases_and_refunds_across_two_processes(
    client: Any, settings: Settings, tmp_path: Path
) -> None:
    merchant = await make_merchant()
    member = await make_member(merchant)
    await create_staff(merchant, store_code="main", username="till", role="cashier", password=PASSWORD)
    account = await PointsAccount.get_or_none(member_id=member.id)
    initial = account.balance if account else 0
    amounts = {f"k{i:03d}": 300 + (i % 5) * 10 for i in range(UNIQUE)}  # < 1,000 yuan in all: no tier change

    with servers(settings, tmp_path, 2) as urls:
        connector = aiohttp.TCPConnector(limit=128)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            for url in urls:
                await wait_healthy(http, url, tmp_path)
            login = {"merchant": merchant.slug, "username": "till", "password": PASSWORD}
            token = (await post(http, f"{urls[0]}/api/staff/login", "", login))["token"]

            def buy(key: str, n: int) -> Any:
                body = {"idempotency_key": key, "member_id": member.id, "amount_fen": amounts[key]}
                return post(http, f"{urls[n % 2]}/api/staff/purchases", token, body)

            def refund(purchase_id: int, n: int) -> Any:
                url = f"{urls[n % 2]}/api/staff/purchases/{purchase_id}/refund"
                return post(http, url, token, {"idempotency_key": f"refund-{purchase_id}"})

            keys = list(amounts)
            first = await asyncio.gather(*(buy(key, n) for n, key in enumerate(keys[:REFUNDED])))
            # Now, all at once: the other purchases, repeats of some keys on the other process, and
            # refunds of the first purchases (each refund sent twice, once to each process).
            rest = [buy(key, n) for n, key in enumerate(keys[REFUNDED:])]
            repeats = [buy(key, n + 1) for n, key in enumerate(keys[-REPEATED:])]
            refunds = [refund(p["purchase_id"], n) for n, p in enumerate(first) for _ in (0, 1)]
            results = await asyncio.gather(*rest, *repeats, *refunds)
    later = results[: len(rest)]
    again = results[len(rest) : len(rest) + len(repeats)]
    refund_results = results[len(rest) + len(repeats) :]

    by_key = {p["idempotency_key"]: p for p in await Purchase.filter(member_id=member.id).values()}
    assert sorted(by_key) == keys  # every unique key made exactly one purchase (unique index)
    purchases = [*first, *later]
    assert len({p["purchase_id"] for p in purchases}) == UNIQUE
    originals = {p["purchase_id"] for p in later[-REPEATED:]}
    assert {p["purchase_id"] for p in again} == originals and len(originals) == REPEATED
    assert all(p["purchase_id"] == by_key[key]["id"] for key, p in zip(keys[-REPEATED:], again, strict=True))
    assert {r["purchase_id"] for r in refund_results} == {p["purchase_id"] for p in first}
    assert sum(not r["replayed"] for r in refund_results) == REFUNDED  # each refund applied once
    assert await Purchase.filter(member_id=member.id, status=PurchaseStatus.REFUNDED).count() == REFUNDED

    earned = sum(p["points_earned"] + p["tier_gift_points"] for p in purchases)
    reversed_ = sum(r["points_reversed"] for r in refund_results if not r["replayed"])
    assert reversed_ == sum(p["points_earned"] for p in first)
    account = await PointsAccount.get(member_id=member.id)
    assert account.balance == initial + earned - reversed_

    audit = subprocess.run(  # noqa: ASYNC221 - a short CLI run after the load
        [sys.executable, "-m", "bot", "audit", "points"],
        env=server_env(settings, 1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "0 mismatches" in audit.stdout
