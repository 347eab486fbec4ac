"""tortoise-orm models, one module per aggregate, and the tortoise config."""

from __future__ import annotations

from typing import Any

from tortoise.backends.base.config_generator import expand_db_url

MODEL_MODULES = [
    "models.merchant",
    "models.staff",
    "models.member",
    "models.points",
    "models.loyalty",
    "models.purchase",
    "models.checkin",
    "models.referral",
    "models.mall",
    "models.coupon",
    "models.wallet",
    "models.cards",
    "models.task",
    "models.notice",
    "models.product",
    "models.invite",
    "models.member_import",
    "models.menu",
    "models.credit",
    "models.tag",
    "models.campaign",
]


# Connections per process (tortoise's default is 5): requests beyond it queue for a connection while
# PostgreSQL has cores to spare. A `?maxsize=N` in DATABASE_URL overrides it.
POOL_SIZE = 10


async def keep_session(connection: Any) -> None:
    """Pool release without asyncpg's default reset round trip (`SELECT pg_advisory_unlock_all(); CLOSE
    ALL; UNLISTEN *; RESET ALL`), which doubled the cost of every query outside a transaction. Safe
    because memberbot leaves no session state behind: no SET, LISTEN, advisory locks or cursors outside
    a transaction; asyncpg itself still rolls back a transaction left open before calling this."""


def tortoise_config(database_url: str) -> dict[str, Any]:
    """The one tortoise config: the CLI, the app factory, the worker and tests all use it."""
    connection = expand_db_url(database_url)
    if connection["engine"] == "tortoise.backends.asyncpg":
        connection["credentials"]["reset"] = keep_session
        connection["credentials"].setdefault("maxsize", POOL_SIZE)
    return {
        "connections": {"default": connection},
        "apps": {
            "models": {
                "models": MODEL_MODULES,
                "default_connection": "default",
                "migrations": "migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }
