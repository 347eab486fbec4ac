"""`WORKERS=N memberbot serve`: N processes share one port on PostgreSQL + Redis, and stop together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import REDIS_URL, SECRET, real_redis
from tests.test_two_processes import ROOT, free_port

pytestmark = pytest.mark.slow
PARENT_WAIT_SECONDS = 20


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def healthy(url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "SECRET_KEY": SECRET, "HOST": "127.0.0.1", "LOG_LEVEL": "WARNING", **extra}


def start_two(tmp_path: Path, database_url: str) -> tuple[subprocess.Popen[bytes], list[int]]:
    port = free_port()
    with (tmp_path / "serve.log").open("wb") as log:
        parent = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],
            cwd=ROOT,
            stdout=log,
            stderr=log,
            env=env(DATABASE_URL=database_url, REDIS_URL=REDIS_URL, PORT=str(port), WORKERS="2"),
        )
    assert healthy(f"http://127.0.0.1:{port}", time.monotonic() + PARENT_WAIT_SECONDS), (
        tmp_path / "serve.log"
    ).read_text()
    workers = children(parent.pid)
    assert len(workers) == 2
    for _ in range(20):  # every connection is served, whichever process the kernel gives it to
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    return parent, workers


def gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in pids)


@real_redis
def test_two_workers_share_the_port_and_stop_together(tmp_path: Path, postgres_url: str) -> None:
    parent, workers = start_two(tmp_path, postgres_url)
    try:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=PARENT_WAIT_SECONDS) == 0
        assert gone(workers)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@real_redis
def test_a_worker_that_dies_takes_the_service_down_with_its_exit_code(
    tmp_path: Path, postgres_url: str
) -> None:
    parent, workers = start_two(tmp_path, postgres_url)
    try:
        os.kill(workers[0], signal.SIGKILL)
        assert parent.wait(timeout=PARENT_WAIT_SECONDS) == signal.SIGKILL
        assert gone(workers)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_more_than_one_worker_is_refused_on_the_embedded_default(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env=env(DATABASE_URL="", REDIS_URL="memory://", WORKERS="2"),
    )
    assert done.returncode == 2
    assert "WORKERS > 1 needs PostgreSQL and a real Redis" in done.stderr
