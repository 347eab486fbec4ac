"""Rolling the analytics queue into the rollups (`memberbot_analytics_refresh`, migration 0021).

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
_REBUILD_SQL = "SELECT memberbot_analytics_rebuild(:merchant)"


async def refresh(now: datetime | None = None, *, batch: int = BATCH) -> dict[str, int]:
    """Roll up everything queued until now; returns how many queued changes were taken."""
    taken = 0
    while True:
        rows = await queries.fetch_rows(_REFRESH_SQL, limit=batch)
        taken += int(rows[0]["taken"])
        if int(rows[0]["taken"]) < batch:
            return {"rolled_up": taken}


async def rebuild(merchant_id: int) -> None:
    """Recompute one merchant's rollups from its purchases, members and points ledger."""
    await queries.fetch_rows(_REBUILD_SQL, merchant=merchant_id)


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
