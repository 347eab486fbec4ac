"""帮助 through the full Official Account webhook vs a bare wechatpy baseline, plaintext and safe mode.

Each request is a WeChat-signed 帮助 text with a unique MsgId (so dedup never short-cuts it), from a pool
of users. `memberbot serve` runs with the demo merchant seeded on the embedded default (a fresh
embedded PostgreSQL 18, in-process Redis), and on a fresh PostgreSQL database + Redis db
(bench.services; skipped when unreachable); the baseline is bench.baseline.
Same load tool, same run, same machine; memberbot-pg also with WORKERS=2. Target: memberbot on
PostgreSQL + Redis at >= 50% of the baseline's requests/s in plaintext mode.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import xmltodict
from wechatpy.crypto import WeChatCrypto

from bench import services
from bench.baseline import signature
from bench.harness import (
    ROOT,
    Check,
    LoadResult,
    Report,
    Request,
    Server,
    Verdict,
    free_port,
    load,
    python_argv,
    table,
)
from bot.demo import DEMO

TITLE = "帮助 via /wechat/demo vs bare wechatpy baseline"
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
WARMUP_SECONDS = 0.5
ROUNDS = 2
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
MAX_REQUESTS = int(os.environ.get("BENCH_MAX_REQUESTS", "16000"))  # per server and mode
USERS = 200
TARGET_RATIO = 0.50  # of the protocol-only baseline's req/s, plaintext (issue 13)
TARGET_RSS_MIB = 200.0
MODES = ("plain", "safe")
ACCOUNT = "gh_demo00000000"


def help_requests(mode: str, count: int) -> list[Request]:
    """`count` signed 帮助 pushes for the demo merchant, built before the clock starts."""
    crypto = WeChatCrypto(DEMO.oa_token, DEMO.oa_aes_key, DEMO.oa_appid)
    stamp = str(int(time.time()))
    out = []
    for i in range(count):
        nonce, openid = str(secrets.randbelow(10**9)), f"oBench{i % USERS:022d}"
        xml = (
            f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
            f"</FromUserName><CreateTime>{stamp}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[帮助]]></Content><MsgId>{secrets.randbits(62)}</MsgId></xml>"
        )
        params = {
            "signature": signature(DEMO.oa_token, stamp, nonce),
            "timestamp": stamp,
            "nonce": nonce,
            "openid": openid,
        }
        if mode == "safe":
            encrypted = xmltodict.parse(crypto.encrypt_message(xml, nonce, stamp))["xml"]["Encrypt"]
            params.update(encrypt_type="aes", msg_signature=signature(DEMO.oa_token, stamp, nonce, encrypted))
            xml = (
                f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
            )
        out.append(Request("/wechat/demo", params, xml.encode()))
    return out


def _ok(mode: str) -> Check:
    marker = b"<Encrypt>" if mode == "safe" else b"<MsgType><![CDATA[text]]></MsgType>"
    return lambda status, body: status == 200 and marker in body


def sample_reply(body: bytes, mode: str) -> str:
    """The text of one reply (decrypted in safe mode), first line only, to show what was measured."""
    xml = body.decode()
    if mode == "safe":
        envelope = xmltodict.parse(xml)["xml"]
        crypto = WeChatCrypto(DEMO.oa_token, DEMO.oa_aes_key, DEMO.oa_appid)
        xml = crypto.decrypt_message(
            envelope, envelope["MsgSignature"], envelope["TimeStamp"], envelope["Nonce"]
        )
    content = xmltodict.parse(xml)["xml"].get("Content") or ""
    return content.splitlines()[0][:40] if content else "(empty)"


@dataclass
class Measured:
    server: str
    mode: str
    result: LoadResult = field(default_factory=LoadResult)
    rss_mib: float = 0.0
    sample: str = ""


async def _slice(server: Server, mode: str, seconds: float, count: int) -> LoadResult:
    """One timed load slice, with the server's CPU time over it."""
    batch = iter(help_requests(mode, count))
    cpu = server.cpu_seconds()
    result = await load(server.url, batch, connections=CONNECTIONS, seconds=seconds, check=_ok(mode))
    result.server_cpu_seconds = server.cpu_seconds() - cpu
    return result


async def _sample(server: Server, mode: str) -> str:
    [request] = help_requests(mode, 1)
    async with (
        aiohttp.ClientSession(server.url) as session,
        session.post(request.path, params=request.params, data=request.body) as response,
    ):
        body = await response.read()
    if response.status != 200 or not body.startswith(b"<xml>"):
        return f"HTTP {response.status}: {body[:60].decode(errors='replace')}"
    return sample_reply(body, mode)


async def measure(servers: list[Server]) -> list[Measured]:
    """Interleave short slices (server by server, mode by mode, ROUNDS times) so that a change in the
    machine's background load hits every server alike."""
    measured = {(s.name, mode): Measured(s.name, mode) for s in servers for mode in MODES}
    for mode in MODES:
        for server in servers:
            await _slice(server, mode, WARMUP_SECONDS, 1000)
    for _ in range(ROUNDS):
        for mode in MODES:
            for server in servers:
                slice_result = await _slice(server, mode, SECONDS / ROUNDS, MAX_REQUESTS // ROUNDS)
                measured[server.name, mode].result.add(slice_result)
    for (name, mode), entry in measured.items():
        server = next(s for s in servers if s.name == name)
        entry.sample = await _sample(server, mode)
        entry.rss_mib = server.max_rss_mib()
    return list(measured.values())


def _memberbot(name: str, database_url: str, redis_url: str, workdir: Path, workers: int = 1) -> Server:
    port = free_port()
    env = {
        "WORKERS": str(workers),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(36),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "WECHAT_API_BASE": "http://127.0.0.1:9",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    for command in (["migrate"], ["seed-demo", "--if-empty"]):
        subprocess.run(
            python_argv("-m", "bot", *command),
            env={**os.environ, **env},
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return Server(name, python_argv("-m", "bot", "serve"), env, port, log_path=workdir / f"{name}.log")


def _baseline(workdir: Path) -> Server:
    port = free_port()
    return Server(
        "baseline",
        python_argv("-m", "bench.baseline", "--port", str(port)),
        {},
        port,
        log_path=workdir / "baseline.log",
    )


def report(measured: list[Measured]) -> Report:
    rows: list[list[object]] = []
    verdicts = []
    base = {m.mode: m.result for m in measured if m.server == "baseline"}
    for m in measured:
        r = m.result
        ratio = r.rps / base[m.mode].rps if base.get(m.mode) and base[m.mode].rps else 0.0
        shown = "1.00" if m.server == "baseline" else f"{ratio:.2f}"
        rows.append(
            [
                m.mode,
                m.server,
                r.rps,
                r.percentile(50),
                r.percentile(99),
                r.requests,
                r.errors,
                r.cpu_us_per_request,
                m.rss_mib,
                shown,
                m.sample,
            ]
        )
        if m.server != "baseline":
            met = "met" if ratio >= TARGET_RATIO else "NOT met"
            cpu = base[m.mode].cpu_us_per_request / r.cpu_us_per_request if r.cpu_us_per_request else 0.0
            verdicts.append(
                f"{m.server} {m.mode}: {ratio:.0%} of baseline req/s (target >= "
                f"{TARGET_RATIO:.0%}: {met}); by server CPU per request {cpu:.0%}"
            )
    head = [
        "mode",
        "server",
        "req/s",
        "p50 ms",
        "p99 ms",
        "requests",
        "errors",
        "CPU µs/req",
        "RSS MiB",
        "ratio",
        "reply",
    ]
    found = {(m.server, m.mode): m for m in measured}
    targets: list[Verdict] = []
    for mode in MODES:
        pg, two = found.get(("memberbot-pg", mode)), found.get(("memberbot-pg-2w", mode))
        if pg is None or not base.get(mode):
            continue
        targets.append(
            Verdict(
                f"帮助 webhook ({mode})",
                "memberbot / protocol-only baseline (req/s)",
                pg.result.rps / base[mode].rps,
                TARGET_RATIO if mode == "plain" else None,
            )
        )
        targets.append(
            Verdict(f"帮助 webhook ({mode})", "server CPU µs per reply", pg.result.cpu_us_per_request, None)
        )
        if two is not None and pg.result.rps:
            targets.append(
                Verdict(
                    f"帮助 webhook ({mode})",
                    "WORKERS=2 / WORKERS=1 (req/s)",
                    two.result.rps / pg.result.rps,
                    None,
                )
            )
    rss = [m.rss_mib for m in measured if m.server != "baseline"]
    targets.append(Verdict("帮助 webhook", "RSS MiB per process", max(rss), TARGET_RSS_MIB, at_most=True))
    return Report(table(head, rows) + "\n\n" + "\n".join(verdicts), targets)


async def run() -> Report:
    ambient = os.getloadavg()[0]  # other work on the machine skews absolute figures; ratios less so
    with (
        tempfile.TemporaryDirectory(prefix="memberbot-bench-") as tmp,
        services.embedded_postgres(Path(tmp)) as embedded_url,
    ):
        workdir = Path(tmp)
        servers = [_baseline(workdir), _memberbot("memberbot", embedded_url, "memory://", workdir)]
        skipped = ""
        try:  # a fresh database and Redis db, so the demo merchant is seeded
            await services.fresh_postgres()
            await services.fresh_redis()
            servers.append(_memberbot("memberbot-pg", services.DATABASE_URL, services.REDIS_URL, workdir))
            servers.append(
                _memberbot("memberbot-pg-2w", services.DATABASE_URL, services.REDIS_URL, workdir, workers=2)
            )
        except services.Unavailable as exc:
            skipped = f"\n(memberbot-pg skipped: {exc})"
        try:
            await asyncio.gather(*(server.start() for server in servers))
            measured = await measure(servers)
        finally:
            for server in servers:
                server.stop()
    setup = (
        f"{CONNECTIONS} connections, {SECONDS:.0f} s per server and mode in {ROUNDS} interleaved slices "
        f"after {WARMUP_SECONDS:g} s warm-up, "
        f"{os.cpu_count()} CPUs, load average {ambient:.1f} before, Python {sys.version.split()[0]}"
    )
    result = report(measured)
    return Report(setup + "\n" + result.text + skipped, result.verdicts)
