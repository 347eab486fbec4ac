"""The simulator's campaign state (mass-send jobs, anti-replay ids, SMS keys): its own module, so the
world of `state.py` holds it without an import cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SimMassJob:
    msg_id: int
    appid: str
    openids: list[str]
    text: str
    created_at: float
    sent: int = 0
    errors: int = 0


@dataclass
class SimCampaigns:
    """Campaign-side state of the simulator."""

    mass_jobs: dict[int, SimMassJob] = field(default_factory=dict)
    mass_client_ids: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    mass_received: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (appid, openid, month)
    mass_calls: dict[tuple[str, str], int] = field(default_factory=dict)  # (appid, day) → calls
    mass_daily_limit: int = 10_000
    subscribe_client_ids: dict[tuple[str, str, str], float] = field(default_factory=dict)
    sms_keys: dict[str, str] = field(default_factory=dict)  # SecretId → SecretKey
    sms_sent: list[dict[str, Any]] = field(default_factory=list)
