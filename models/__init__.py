"""tortoise-orm models, one module per aggregate, and the tortoise config."""

from __future__ import annotations

import importlib
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
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


READ_CONNECTION = "read"


def read_client(url: str) -> BaseDBAsyncClient:
    """A client of the read replica (DATABASE_READ_URL), not opened yet (`create_connection`). It stays
    out of tortoise's registry: with a second registered connection, every `in_transaction()` would have
    to name its connection."""
    info = _connection(url)
    module = importlib.import_module(info["engine"])
    client: BaseDBAsyncClient = module.client_class(connection_name=READ_CONNECTION, **info["credentials"])
    return client


def _connection(url: str) -> dict[str, Any]:
    connection = expand_db_url(url)
    if connection["engine"] == "tortoise.backends.asyncpg":
        connection["credentials"]["reset"] = keep_session
        connection["credentials"].setdefault("maxsize", POOL_SIZE)
    return connection


def tortoise_config(database_url: str) -> dict[str, Any]:
    """The one tortoise config: the CLI, the app factory, the worker and tests all use it."""
    connections = {"default": _connection(database_url)}
    return {
        "connections": connections,
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
