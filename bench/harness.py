"""Benchmark plumbing: server processes on loopback ports, a bounded HTTP load client, result tables.

Every server runs in its own process (started from an argv + environment, ready once /healthz answers
200) so its RSS can be read from /proc. Load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Server:
    """A server process started from `argv`; `url` is its loopback base URL."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    ready_path: str = "/healthz"  # answers 200 once the server is up

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def start(self, ready_within: float = 60.0) -> None:  # a loaded machine starts slowly
        log_file = self.log_path.open("wb") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(  # noqa: ASYNC220 - a one-off spawn before any load
            list(self.argv),
            env={**os.environ, **self.env},
            cwd=ROOT,
            stdout=log_file,
            stderr=log_file,
        )
        deadline = time.monotonic() + ready_within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}{self._log_hint()}")
                try:
                    async with session.get(f"{self.url}{self.ready_path}") as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not healthy within {ready_within:.0f} s{self._log_hint()}")

    def _log_hint(self) -> str:
        return f" (log: {self.log_path})" if self.log_path else ""

    def pids(self) -> list[int]:
        """The server process and its children (the serve processes of `WORKERS=N`)."""
        assert self.process is not None
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children")
        return [pid, *(int(child) for child in children.read_text().split())] if children.exists() else [pid]

    def rss_mib(self) -> float:
        return sum(rss_mib(pid) for pid in self.pids())

    def max_rss_mib(self) -> float:
        """The largest resident set of one of its processes (the target is per process)."""
        return max(rss_mib(pid) for pid in self.pids())

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    params: dict[str, str]
    body: bytes


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    server_cpu_seconds: float = 0.0  # filled in by callers that measure the server process
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def add(self, other: LoadResult) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.seconds += other.seconds
        self.server_cpu_seconds += other.server_cpu_seconds
        self.latencies_ms += other.latencies_ms

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_seconds / self.requests * 1e6 if self.requests else 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else 0.0
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target of issue 13, measured in one run: `value` against `bound` (`at_most`: an upper bound)."""

    flow: str
    measure: str
    value: float
    bound: float | None  # None: measured and reported, no target
    at_most: bool = False
    note: str = ""

    @property
    def met(self) -> bool:
        if self.bound is None:
            return True
        return self.value < self.bound if self.at_most else self.value >= self.bound

    def row(self) -> list[object]:
        if self.bound is None:
            return [self.flow, self.measure, f"{self.value:,.2f}", "-", "measured", self.note]
        target = f"{'<' if self.at_most else '>='} {self.bound:g}"
        met = "met" if self.met else "NOT met"
        return [self.flow, self.measure, f"{self.value:,.2f}", target, met, self.note]


@dataclass
class Report:
    """A benchmark's table (printed as it is) and the targets it measured (printed again at the end)."""

    text: str
    verdicts: list[Verdict] = field(default_factory=list)


def verdict_table(verdicts: Sequence[Verdict]) -> str:
    return table(["flow", "measure", "value", "target", "", "note"], [v.row() for v in verdicts])


Check = Callable[[int, bytes], bool]


async def load(
    base_url: str, requests: Iterator[Request], *, connections: int, seconds: float, check: Check
) -> LoadResult:
    """POST `requests` over `connections` keep-alive connections for `seconds` (or until they run out).

    A response counts as an error when `check(status, body)` is false or the request fails.
    """
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        stop_at = started + seconds

        async def worker() -> None:
            for request in requests:
                if time.perf_counter() >= stop_at:
                    return
                sent = time.perf_counter()
                try:
                    async with session.post(
                        request.path,
                        params=request.params,
                        data=request.body,
                        headers={"Content-Type": "text/xml"},
                    ) as response:
                        ok = check(response.status, await response.read())
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                result.latencies_ms.append((time.perf_counter() - sent) * 1000)
                result.requests += 1
                result.errors += not ok

        await asyncio.gather(*(worker() for _ in range(connections)))
        result.seconds = time.perf_counter() - started
    return result


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def _width(text: str) -> int:
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))
