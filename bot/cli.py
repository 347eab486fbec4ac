"""The `memberbot` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pydantic
from tortoise import Tortoise

from bot import logs
from bot.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError
from bot.settings import EMBEDDED_DATA_DIR, EMBEDDED_DATABASE, Settings
from handlers.core.errors import DomainError, ErrorCode
from models import tortoise_config

if TYPE_CHECKING:
    from handlers.wechat.client import WeChatClient


def load_settings() -> Settings:
    """Settings from the environment; a bad or missing one stops here with one line and exit code 2."""
    try:
        return Settings()
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]).upper() or "settings"
        print(f"memberbot: invalid setting {where}: {first['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[Settings]:
    """`settings` with a database URL: DATABASE_URL, or else the embedded PostgreSQL under var/pg,
    running while the block runs (shared with the other memberbot processes using it)."""
    if settings.database_url:
        yield settings
        return
    server = EmbeddedPostgres(EMBEDDED_DATA_DIR)
    try:
        server.start()
    except EmbeddedPostgresError as exc:
        print(f"memberbot: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        server.create_database(EMBEDDED_DATABASE)
        yield settings.model_copy(update={"database_url": server.url(EMBEDDED_DATABASE)})
    finally:
        server.release()


async def _with_orm(settings: Settings, work: Callable[[], Awaitable[Any]]) -> Any:
    await Tortoise.init(config=tortoise_config(settings.database_url))
    try:
        return await work()
    finally:
        await Tortoise.close_connections()


def parse_now(raw: str | None) -> datetime | None:
    """`--now` for the jobs: an ISO time with an offset (default: now); None after printing why not."""
    if not raw:
        return datetime.now(UTC)
    try:
        now = datetime.fromisoformat(raw)
    except ValueError:
        now = None
    if now is None or now.tzinfo is None:
        print(
            "memberbot: --now needs an ISO time with a timezone offset, e.g. 2027-01-01T00:00:00+08:00",
            file=sys.stderr,
        )
        return None
    return now


def _run(settings: Settings, work: Callable[[], Awaitable[Any]]) -> int:
    try:
        with database(settings) as ready:
            result = asyncio.run(_with_orm(ready, work))
    except DomainError as exc:
        print(f"memberbot: {exc.message}", file=sys.stderr)
        return 1
    return int(result or 0)


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from bot.app import create_app, frozen_heap

    settings = load_settings()
    logs.configure(settings.log_level)
    if settings.workers > 1 and not args.reuse_port:
        settings.secret()  # DEMO=1 generates the key file here, once, not in each worker at the same time
        return _supervise(settings.workers)
    with database(settings) as ready:
        if args.migrate:
            asyncio.run(_migrate(ready.database_url))
        if args.seed_demo and _run(ready, lambda: _seed_demo(if_empty=True)):
            return 1
        app = create_app(ready)
        app.cleanup_ctx.append(frozen_heap)  # last: after every resource is open
        web.run_app(
            app,
            host=ready.host,
            port=ready.port,
            reuse_port=args.reuse_port,
            access_log=None,
            print=lambda msg: print(msg, file=sys.stderr),
        )
    return 0


def _supervise(count: int) -> int:
    """Run `count` serve processes on one port (SO_REUSEPORT: the kernel spreads connections over them).
    SIGINT/SIGTERM stop them all (exit 0); if one exits on its own, the others are stopped too and its exit
    code is ours, so whatever supervises this process (docker, systemd) restarts the service whole."""
    argv = [sys.executable, "-m", "bot", "serve", "--reuse-port"]
    children: list[subprocess.Popen[bytes]] = []
    stopping: set[int] = set()
    requested: list[int] = []  # the signal that asked us to stop, if one did

    def on_signal(signum: int, _: object) -> None:
        requested.append(signum)
        stop()

    def stop() -> None:
        for child in children:  # once each: a second SIGINT would cut a child's graceful shutdown short
            if child.pid not in stopping and child.poll() is None:
                stopping.add(child.pid)
                child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # Own sessions: a terminal's Ctrl-C reaches the supervisor only, which passes it on once.
    for _ in range(count):
        if requested:
            break
        children.append(subprocess.Popen(argv, start_new_session=True))  # noqa: S603 - our own argv
    if requested:  # a signal that came while a child was being started
        stop()
    if not children:
        return 0
    pid, status = os.wait()  # the first child to exit (on a signal: after `stop`)
    stop()
    for child in children:
        if child.pid != pid:
            child.wait()
    return 0 if requested else abs(os.waitstatus_to_exitcode(status)) or 1


def cmd_worker(args: argparse.Namespace) -> int:
    from arq.worker import run_worker

    from bot.worker import EMBEDDED_REDIS_REFUSAL, WorkerSettings, redis_settings

    settings = load_settings()
    if settings.redis_url.startswith("memory://"):
        print(f"memberbot: {EMBEDDED_REDIS_REFUSAL}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    with database(settings) as ready:
        run_worker(WorkerSettings, redis_settings=redis_settings(ready.redis_url), ctx={"settings": ready})
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    with database(load_settings()) as ready:
        asyncio.run(_migrate(ready.database_url))
    return 0


async def _migrate(database_url: str) -> None:
    from tortoise.migrations.api import migrate

    try:
        await migrate(config=tortoise_config(database_url))
    finally:
        await Tortoise.close_connections()
    print("memberbot: migrations applied", file=sys.stderr)


async def _seed_demo(*, if_empty: bool) -> int:
    from bot.demo import seed_demo

    return await seed_demo(if_empty=if_empty)


def cmd_seed_demo(args: argparse.Namespace) -> int:
    return _run(load_settings(), lambda: _seed_demo(if_empty=args.if_empty))


def cmd_merchant(args: argparse.Namespace) -> int:
    from handlers.staff import merchants

    settings = load_settings()

    async def create() -> None:
        data = merchants.MerchantInput(
            slug=args.slug,
            name=args.name,
            timezone=args.timezone or settings.timezone,
            oa_appid=args.oa_appid,
            oa_secret=args.oa_secret,
            oa_token=args.oa_token,
            oa_aes_key=args.oa_aes_key,
            mp_appid=args.mp_appid,
            mp_secret=args.mp_secret,
        )
        merchant = await merchants.create_merchant(data)
        print(f"created merchant {merchant.slug} (id {merchant.id})")

    async def list_() -> None:
        for merchant in await merchants.list_merchants():
            print(f"{merchant.id}\t{merchant.slug}\t{merchant.name}\t{merchant.timezone}")

    async def show() -> None:
        merchant = await merchants.get_merchant(args.slug)
        for field in ("id", "slug", "name", "timezone", "oa_appid", "mp_appid", "retention_grace_days"):
            print(f"{field}: {getattr(merchant, field)}")
        print(f"oa_token: {'set' if merchant.oa_token else 'unset'}")
        print(f"oa_aes_key: {'set' if merchant.oa_aes_key else 'unset'}")
        print(f"webhook: {settings.base_url()}/wechat/{merchant.slug}")

    return _run(settings, {"create": create, "list": list_, "show": show}[args.action])


def cmd_staff(args: argparse.Namespace) -> int:
    from handlers.staff import accounts as staff_accounts
    from handlers.staff import merchants

    settings = load_settings()
    password = os.environ.get("MEMBERBOT_STAFF_PASSWORD") or getpass.getpass("password: ")

    async def create() -> None:
        merchant = await merchants.get_merchant(args.merchant)
        staff = await staff_accounts.create_staff(
            merchant, store_code=args.store, username=args.username, role=args.role, password=password
        )
        print(f"created staff {staff.username} ({staff.role}) id {staff.id}")

    return _run(settings, create)


def cmd_audit(args: argparse.Namespace) -> int:
    from handlers.credit.audit import audit_credit
    from handlers.loyalty.ledger_audit import audit_points
    from handlers.staff import merchants
    from handlers.wallet.audit import audit_wallet

    settings = load_settings()
    check = {"stored-value": audit_wallet, "credit": audit_credit}.get(args.ledger, audit_points)

    async def audit() -> int:
        merchant_id = (await merchants.get_merchant(args.merchant)).id if args.merchant else None
        mismatches = await check(merchant_id)
        for mismatch in mismatches:
            print(f"MISMATCH {mismatch}")
        print(f"audit {args.ledger}: {len(mismatches)} mismatches")
        return 1 if mismatches else 0

    return _run(settings, audit)


def cmd_points(args: argparse.Namespace) -> int:
    from handlers.loyalty import ledger
    from handlers.staff import merchants

    settings = load_settings()
    now = parse_now(args.now)
    if now is None:
        return 2

    async def expire() -> None:
        merchant_id = (await merchants.get_merchant(args.merchant)).id if args.merchant else None
        released = await ledger.release_pending(now, merchant_id)
        expired = await ledger.expire_lapsed(now, merchant_id)
        print(f"points: released {released} pending lots, expired points of {expired} members")

    return _run(settings, expire)


def cmd_retention(args: argparse.Namespace) -> int:
    from handlers.members.retention import erase_due

    settings = load_settings()
    now = parse_now(args.now)
    if now is None:
        return 2

    async def run() -> None:
        erased = await erase_due(now)
        print(f"retention: erased {erased} member profiles past their merchant's grace period")

    return _run(settings, run)


def cmd_members(args: argparse.Namespace) -> int:
    from handlers import effects
    from handlers.member_import import jobs, report
    from handlers.staff import merchants
    from models.member_import import MemberImport

    settings = load_settings()

    def progress(job: MemberImport) -> None:
        print(f"memberbot: import {job.id}: {job.processed_rows}/{job.total_rows} rows", file=sys.stderr)

    async def import_members(file: IO[bytes], out: IO[bytes] | None) -> int:
        merchant = await merchants.get_merchant(args.merchant)
        job, _ = await jobs.stage(
            merchant,
            file,
            filename=os.path.basename(args.file),
            dry_run=args.dry_run,
            welcome_gifts=args.welcome_gifts,
            actor="cli",
            now=datetime.now(UTC),
            claimed=True,  # applied here; if this process stops, the task finishes the job
        )
        progress(job)
        await jobs.drive(job.id, effects.build(), progress=progress)
        job = await MemberImport.get(id=job.id)
        what = "would be (dry run)" if job.dry_run else "rows"
        print(
            f"import {job.id} {what}: {job.created} created, {job.updated} updated, "
            f"{job.unchanged} unchanged, {job.rejected} rejected"
        )
        if out is not None:
            async for chunk in report.chunks(job):
                out.write(chunk)
        return 0

    try:
        with contextlib.ExitStack() as files:
            file = files.enter_context(open(args.file, "rb"))
            out = files.enter_context(open(args.report, "wb")) if args.report else None
            return _run(settings, lambda: import_members(file, out))
    except OSError as exc:
        print(f"memberbot: {exc}", file=sys.stderr)
        return 1


@contextlib.asynccontextmanager
async def _wechat(settings: Settings) -> AsyncIterator[WeChatClient]:
    """A WeChat client for one command (its token cache in REDIS_URL, shared with the server's)."""
    import aiohttp

    from bot.app import connect_redis
    from handlers.wechat.client import WeChatClient

    redis = connect_redis(settings.redis_url)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10, connect=3)) as session:
            yield WeChatClient(session, redis, settings.wechat_api_url())
    finally:
        await redis.aclose()


def _read_menu(path: str, click_keys: frozenset[str]) -> Any:
    """The menu definition in `path`, checked; None after printing the one line that says why not."""
    from handlers import menu

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        menu.checked(raw, click_keys)
    except OSError as exc:
        print(f"memberbot: cannot read {path}: {exc.strerror}", file=sys.stderr)
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        print(f"memberbot: {path} is not JSON: {exc}", file=sys.stderr)
    except DomainError as exc:
        print(f"memberbot: {path}: {exc.message}", file=sys.stderr)
    else:
        return raw
    return None


def cmd_menu(args: argparse.Namespace) -> int:
    from bot.dialog.intents import build_router
    from handlers import menu
    from handlers.staff import merchants
    from handlers.wechat.client import oa_credentials

    settings = load_settings()
    click_keys = build_router().menu_keys()
    raw = None
    if args.action == "push" and args.file:
        raw = _read_menu(args.file, click_keys)
        if raw is None:
            return 2

    async def push() -> int:
        merchant = await merchants.get_merchant(args.merchant)
        async with _wechat(settings) as wechat:
            try:
                pushed = await menu.push_menu(
                    merchant, wechat, raw, click_keys=click_keys, actor="cli", now=datetime.now(UTC)
                )
            except DomainError as exc:
                if exc.code != ErrorCode.VALIDATION:
                    raise
                print(f"memberbot: {exc.message}", file=sys.stderr)  # WeChat refused the menu
                return 2
        what = "the default menu" if pushed.is_default else args.file
        print(f"pushed {what} to the Official Account of {merchant.slug} at {pushed.pushed_at.isoformat()}")
        print(json.dumps(pushed.definition, ensure_ascii=False, indent=2))
        return 0

    async def show() -> int:
        merchant = await merchants.get_merchant(args.merchant)
        if args.live:
            async with _wechat(settings) as wechat:
                live = await wechat.get_menu(oa_credentials(merchant))
            if live is None:
                print(f"{merchant.slug}: WeChat has no custom menu for this Official Account")
            else:
                print(f"{merchant.slug}: WeChat's current menu")
                print(json.dumps(live, ensure_ascii=False, indent=2))
            return 0
        pushed = await menu.last_pushed(merchant)
        if pushed is None:
            print(f"{merchant.slug}: no menu pushed yet (memberbot menu push --merchant {merchant.slug})")
            return 0
        default = " (the default menu)" if pushed.is_default else ""
        print(f"{merchant.slug}: pushed at {pushed.pushed_at.isoformat()} by {pushed.pushed_by}{default}")
        print(json.dumps(pushed.definition, ensure_ascii=False, indent=2))
        return 0

    return _run(settings, push if args.action == "push" else show)


def cmd_wechat_sim(args: argparse.Namespace) -> int:
    from bot.wechat_sim import run_simulator

    logs.configure("INFO")
    run_simulator(host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memberbot", description="WeChat member-marketing backend")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve HTTP on HOST:PORT (WORKERS processes)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # one of WORKERS
    serve.add_argument("--migrate", action="store_true", help="apply the migrations first")
    serve.add_argument("--seed-demo", action="store_true", help="seed the demo into an empty database")
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="run the periodic jobs (arq; needs real Redis)")
    worker.set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    seed = sub.add_parser("seed-demo", help="create the demo merchant, store and staff")
    seed.add_argument("--if-empty", action="store_true", help="do nothing if any merchant exists")
    seed.set_defaults(func=cmd_seed_demo)

    merchant = sub.add_parser("merchant", help="manage merchants")
    msub = merchant.add_subparsers(dest="action", required=True)
    create = msub.add_parser("create", help="create a merchant and its first store")
    create.add_argument("--slug", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--timezone", default=None, help="IANA zone (default: the TIMEZONE setting)")
    for option in ("oa-appid", "oa-secret", "oa-token", "oa-aes-key", "mp-appid", "mp-secret"):
        create.add_argument(f"--{option}", default="")
    msub.add_parser("list", help="list merchants")
    show = msub.add_parser("show", help="show one merchant")
    show.add_argument("slug")
    merchant.set_defaults(func=cmd_merchant)

    staff = sub.add_parser("staff", help="manage staff accounts")
    ssub = staff.add_subparsers(dest="action", required=True)
    screate = ssub.add_parser(
        "create", help="create a staff account (password from MEMBERBOT_STAFF_PASSWORD or a prompt)"
    )
    screate.add_argument("--merchant", required=True, help="merchant slug")
    screate.add_argument("--store", default=None, help="store code (default: none, merchant-wide)")
    screate.add_argument("--username", required=True)
    screate.add_argument("--role", required=True, choices=["cashier", "manager", "admin"])
    staff.set_defaults(func=cmd_staff)

    audit = sub.add_parser("audit", help="check ledger invariants; exit 1 on any mismatch")
    asub = audit.add_subparsers(dest="ledger", required=True)
    apoints = asub.add_parser("points", help="balance = Σ transactions = Σ remaining lots, per member")
    apoints.add_argument("--merchant", default=None, help="merchant slug (default: all)")
    astored = asub.add_parser("stored-value", help="principal/bonus = Σ ledger deltas, never negative")
    astored.add_argument("--merchant", default=None, help="merchant slug (default: all)")
    acredit = asub.add_parser("credit", help="owed = Σ ledger, never above the limit then in force")
    acredit.add_argument("--merchant", default=None, help="merchant slug (default: all)")
    audit.set_defaults(func=cmd_audit)

    pts = sub.add_parser("points", help="points jobs")
    psub = pts.add_subparsers(dest="action", required=True)
    pexpire = psub.add_parser(
        "expire", help="release matured pending points and expire lapsed lots (idempotent)"
    )
    pexpire.add_argument("--merchant", default=None, help="merchant slug (default: all)")
    pexpire.add_argument("--now", default=None, help="ISO time with offset (default: now)")
    pts.set_defaults(func=cmd_points)

    retention = sub.add_parser("retention", help="unfollowed members' data retention")
    rsub = retention.add_subparsers(dest="action", required=True)
    rrun = rsub.add_parser("run", help="erase profiles past the merchant's grace period (idempotent)")
    rrun.add_argument("--now", default=None, help="ISO time with offset (default: now)")
    retention.set_defaults(func=cmd_retention)

    mem = sub.add_parser("members", help="members in bulk")
    memsub = mem.add_subparsers(dest="action", required=True)
    mimport = memsub.add_parser(
        "import", help="import members with opening points and stored value from CSV or XLSX (idempotent)"
    )
    mimport.add_argument("--merchant", required=True, help="merchant slug")
    mimport.add_argument("file", help="a .csv (UTF-8 or GB18030) or .xlsx file, header row first")
    mimport.add_argument("--dry-run", action="store_true", help="report what would happen, change nothing")
    mimport.add_argument(
        "--welcome-gifts", action="store_true", help="new members get the registration bonus and coupons"
    )
    mimport.add_argument("--report", default=None, help="write the report (CSV) to this path")
    mem.set_defaults(func=cmd_members)

    menu = sub.add_parser("menu", help="the Official Account menu")
    menusub = menu.add_subparsers(dest="action", required=True)
    mpush = menusub.add_parser(
        "push", help="check a menu against WeChat's limits and the bot's keys, then set it (menu/create)"
    )
    mpush.add_argument("--merchant", required=True, help="merchant slug")
    mpush.add_argument("--file", default=None, help='JSON {"button": [...]} (default: the built-in menu)')
    mshow = menusub.add_parser("show", help="the menu last pushed, when and by whom")
    mshow.add_argument("--merchant", required=True, help="merchant slug")
    mshow.add_argument("--live", action="store_true", help="ask WeChat for its current menu instead")
    menu.set_defaults(func=cmd_menu)

    sim = sub.add_parser(
        "wechat-sim",
        help="run the WeChat API simulator on its own port (DEMO=1 serve has one at /wechat-sim)",
    )
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8090)
    sim.set_defaults(func=cmd_wechat_sim)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.func(args))
