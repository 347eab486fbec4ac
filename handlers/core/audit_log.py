"""The merchant's audit log: who changed what, written beside the change (in its transaction)."""

from __future__ import annotations

from typing import Any

from models.loyalty import AuditLog


async def record(merchant_id: int, actor: str, action: str, subject: str = "", **detail: Any) -> None:
    """One append-only row: `actor` (e.g. `staff:7`) did `action` (e.g. `wallet.adjust`) to `subject`."""
    await AuditLog.create(merchant_id=merchant_id, actor=actor, action=action, subject=subject, detail=detail)
