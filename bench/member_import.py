"""A 100,000-row member file through `memberbot members import` (the CLI, a separate process), then the
same file again, then both ledger audits.

The file is what a merchant moving from another system brings: 会员号, phone, name, birthday, gender,
tier, opening points (three in four rows; half of those with an expiry date) and opening stored value (one
row in two). The database is fresh (BENCH_DATABASE_URL, default `memberbot_bench`). Target: the first
import under 120 s; the second changes nothing (every row `unchanged`); both audits clean.
"""

from __future__ import annotations

import csv
import os
import random
import tempfile
import time
from pathlib import Path

from bench import services
from bench.harness import table
from bench.services import DATABASE_URL, REDIS_URL

TITLE = "member import: a 100,000-row CSV with opening points and stored value, then again"
ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "100000"))
TARGET_SECONDS = 120.0
HEADER = ["会员号", "手机号", "姓名", "生日", "性别", "等级", "积分", "积分到期日", "储值本金(元)"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
TIERS = ["普通会员", "银卡", "金卡", ""]


def write_file(path: Path, rows: int, prefix: str = "OLD", phones: int = 13900000000) -> None:
    pick = random.Random(11)
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for n in range(1, rows + 1):
            points = pick.randrange(1, 5000) if n % 4 else ""
            writer.writerow(
                [
                    f"{prefix}{n:07d}",
                    f"{phones + n:011d}",
                    pick.choice(SURNAMES) + pick.choice(SURNAMES),
                    f"{pick.randrange(1950, 2005)}-{pick.randrange(1, 13):02d}-{pick.randrange(1, 29):02d}",
                    pick.choice(["男", "女", ""]),
                    pick.choice(TIERS),
                    points,
                    "2099-12-31" if points and n % 2 else "",
                    f"{pick.randrange(0, 100000) / 100:.2f}" if n % 2 else "",
                ]
            )


def timed_import(path: Path) -> tuple[float, str]:
    started = time.monotonic()
    done = services.cli(["members", "import", "--merchant", "bench", str(path)], DATABASE_URL, REDIS_URL)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"import failed: {done.stdout}{done.stderr}")
    return elapsed, done.stdout.strip().splitlines()[-1]


async def run() -> str:
    await services.fresh_postgres()
    created = services.cli(
        ["merchant", "create", "--slug", "bench", "--name", "压测门店"], DATABASE_URL, REDIS_URL
    )
    if created.returncode != 0:
        raise RuntimeError(created.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "members.csv"
        write_file(path, ROWS)
        size = path.stat().st_size / 1e6
        first, first_summary = timed_import(path)
        again, again_summary = timed_import(path)
    points, _ = services.audit(DATABASE_URL, REDIS_URL)
    stored = services.cli(["audit", "stored-value"], DATABASE_URL, REDIS_URL)
    met = "met" if first < TARGET_SECONDS else "not met"
    return table(
        ["run", "rows", "file MB", "seconds", "rows/s", "result"],
        [
            ["first import", ROWS, size, first, ROWS / first, first_summary],
            ["same file again", ROWS, size, again, ROWS / again, again_summary],
            ["audits", "", "", "", "", f"points exit {points}, stored-value exit {stored.returncode}"],
            ["target", "", "", f"< {TARGET_SECONDS:.0f}", "", met],
        ],
    )
