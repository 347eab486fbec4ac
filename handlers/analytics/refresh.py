"""Rolling the analytics queue into the rollups (`memberbot_analytics_refresh`, migration 0022).

The worker runs `refresh` every minute (`handlers.jobs`): each call takes up to `BATCH` queued changes
in one transaction, so a backlog (a bulk import) is worked off in several, and a failed call leaves
its rows queued for the next. Two workers never refresh at once (a transaction advisory lock).
"""

from __future__ import annotations

from datetime import datetime

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
