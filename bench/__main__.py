"""Run every benchmark module (or the ones named on the command line) and print its table."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import sys
import time
import traceback
from types import ModuleType

import bench
from bench.harness import Report, Verdict, verdict_table

SUPPORT = {"harness", "baseline", "floor", "services", "analytics_data"}


def benchmarks(names: list[str]) -> list[ModuleType]:
    found = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name not in SUPPORT)
    unknown = set(names) - set(found)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; available: {', '.join(found)}")
    modules = [importlib.import_module(f"bench.{name}") for name in names or found]
    return [m for m in modules if hasattr(m, "TITLE") and hasattr(m, "run")]


def main(argv: list[str]) -> None:
    failed = []
    verdicts: list[Verdict] = []
    for module in benchmarks(argv):
        name = module.__name__.removeprefix("bench.")
        started = time.monotonic()
        print(f"== {name}: {module.TITLE}", flush=True)
        try:
            report = asyncio.run(module.run())
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        else:
            print(report.text if isinstance(report, Report) else report)
            verdicts += report.verdicts if isinstance(report, Report) else []
        print(f"({time.monotonic() - started:.0f} s)\n", flush=True)
    if verdicts:
        print("== issue 13's targets, each a ratio measured in one run (memberbot / its floor)")
        print(verdict_table(verdicts), flush=True)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main(sys.argv[1:])
