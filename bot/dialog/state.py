"""Multi-step dialog state: one small JSON value per (merchant, openid) in Redis, with a TTL.

The TTL is the dialog's idle timeout: every saved step renews it, and when it lapses the dialog
is simply gone — the member's next message is handled as if no dialog had been started.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from handlers.core.chat import dialog_key

DEFAULT_TTL_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class DialogState:
    """Where a member is in a flow: the flow's name, the step being asked, the answers so far."""

    flow: str
    step: str
    data: dict[str, str] = field(default_factory=dict)

    def advance(self, step: str, **answers: str) -> DialogState:
        return DialogState(self.flow, step, {**self.data, **answers})

    def to_json(self) -> str:
        return json.dumps({"flow": self.flow, "step": self.step, "data": self.data}, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: bytes | str) -> DialogState | None:
        try:
            value: Any = json.loads(raw)
            flow, step, data = value["flow"], value["step"], value.get("data", {})
        except (ValueError, TypeError, KeyError):
            return None
        if not isinstance(flow, str) or not isinstance(step, str) or not isinstance(data, dict):
            return None
        return cls(flow, step, {str(k): str(v) for k, v in data.items()})


class DialogStore:
    def __init__(self, redis: Redis, *, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        if ttl_seconds <= 0:
            raise ValueError("dialog TTL must be positive")
        self.redis = redis
        self.ttl_ms = max(1, int(ttl_seconds * 1000))

    @staticmethod
    def key(merchant_id: int, openid: str) -> str:
        return dialog_key(merchant_id, openid)

    async def load(self, merchant_id: int, openid: str) -> DialogState | None:
        """The member's dialog, or None. A value that does not parse counts as no dialog."""
        return self.parse(await self.redis.get(self.key(merchant_id, openid)))

    @staticmethod
    def parse(raw: bytes | None) -> DialogState | None:
        """A stored value (read here or with the push's dedup claim) as the dialog, or None."""
        return None if raw is None else DialogState.from_json(raw)

    async def save(self, merchant_id: int, openid: str, state: DialogState) -> None:
        await self.redis.set(self.key(merchant_id, openid), state.to_json(), px=self.ttl_ms)

    async def clear(self, merchant_id: int, openid: str) -> bool:
        return bool(await self.redis.delete(self.key(merchant_id, openid)))
