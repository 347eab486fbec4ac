"""tortoise-orm models, one module per aggregate, and the tortoise config."""

from __future__ import annotations

from typing import Any

MODEL_MODULES = [
    "models.merchant",
    "models.staff",
    "models.member",
    "models.points",
    "models.loyalty",
    "models.activity",
    "models.mall",
    "models.coupon",
    "models.wallet",
    "models.cards",
]


def tortoise_config(database_url: str) -> dict[str, Any]:
    """The one tortoise config: the CLI, the app factory, the worker and tests all use it."""
    return {
        "connections": {"default": database_url},
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
