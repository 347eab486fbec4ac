"""Rolling the analytics queue into the rollups (`memberbot_analytics_refresh`, migration 0021), and
rebuilding a merchant's rollups from the source tables in batches (migration 0026).

The worker runs `refresh` every minute and `snapshots` every ten (`handlers.jobs`). Each refresh call
takes up to `BATCH` queued changes in one transaction, so a backlog (a bulk import) is worked off in
several, and a failed call leaves its rows queued for the next. Two workers never refresh at once (a
transaction advisory lock).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from handlers.core import queries

BATCH = 20_000
_REFRESH_SQL = "SELECT memberbot_analytics_refresh(:limit) AS taken"
REBUILD_BATCH = 200_000
_REBUILD_SQL = "SELECT memberbot_analytics_rebuild_step(:merchant, :batch) AS phase"


async def refresh(now: datetime | None = None, *, batch: int = BATCH) -> dict[str, int]:
    """Roll up everything queued until now; returns how many queued changes were taken."""
    taken = 0
    while True:
        rows = await queries.fetch_rows(_REFRESH_SQL, limit=batch)
        taken += int(rows[0]["taken"])
        if int(rows[0]["taken"]) < batch:
            return {"rolled_up": taken}


async def rebuild(merchant_id: int, *, batch: int = REBUILD_BATCH) -> int:
    """Recompute one merchant's rollups from its purchases, members and points ledger, `batch` ids a
    transaction (migration 0026): purchases, members, points postings, then the member stats. A rebuild
    that stopped half-way (a crash, a deploy) is resumed by the next call; one that finished is started
    afresh. The refresher takes nothing until it is done. Returns the number of steps (transactions)."""
    if batch < 1:
        raise ValueError("a rebuild batch is at least one id")
    steps = 0
    while True:
        rows = await queries.fetch_rows(_REBUILD_SQL, merchant=merchant_id, batch=batch)
        steps += 1
        if rows[0]["phase"] == "done":
            return steps


_MERCHANTS_SQL = "SELECT id, timezone FROM merchant ORDER BY id"
_SNAPSHOT_SQL = "SELECT memberbot_member_snapshot(:merchant, :today, :now) AS cells"


async def snapshots(now: datetime) -> dict[str, int]:
    """Recompute every merchant's `member_snapshot` (members per registration month, store, tier, gender
    and age band on the merchant-local day of `now`); the worker runs it every ten minutes."""
    merchants = await queries.fetch_rows(_MERCHANTS_SQL)
    cells = 0
    for merchant in merchants:
        today = now.astimezone(ZoneInfo(merchant["timezone"])).date()
        rows = await queries.fetch_rows(_SNAPSHOT_SQL, merchant=merchant["id"], today=today, now=now)
        cells += int(rows[0]["cells"])
    return {"merchants": len(merchants), "cells": cells}
