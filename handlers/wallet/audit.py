"""`memberbot audit stored-value`: every wallet equals its ledger and is never negative."""

from __future__ import annotations

from typing import Any

from tortoise.functions import Sum

from handlers.loyalty.ledger_audit import Mismatch
from models.wallet import WalletAccount, WalletTransaction


async def _sums(query: Any, column: str) -> dict[int, int]:
    rows = await query.group_by("member_id").annotate(total=Sum(column)).values("member_id", "total")
    return {int(row["member_id"]): int(row["total"] or 0) for row in rows}


async def audit_wallet(merchant_id: int | None = None) -> list[Mismatch]:
    """Every account: principal == Σ principal_delta, bonus == Σ bonus_delta, both ≥ 0; every ledger
    row's running `*_after` is never negative; no ledger rows without an account."""
    scope = {"merchant_id": merchant_id} if merchant_id is not None else {}
    accounts = await WalletAccount.filter(**scope).values(
        "merchant_id", "member_id", "principal_fen", "bonus_fen"
    )
    principal = await _sums(WalletTransaction.filter(**scope), "principal_delta")
    bonus = await _sums(WalletTransaction.filter(**scope), "bonus_delta")
    mismatches: list[Mismatch] = []
    seen: set[int] = set()
    for row in accounts:
        member, merchant = row["member_id"], row["merchant_id"]
        seen.add(member)
        checks = (
            ("principal = sum of principal deltas", principal.get(member, 0), row["principal_fen"]),
            ("bonus = sum of bonus deltas", bonus.get(member, 0), row["bonus_fen"]),
            ("principal is not negative", max(row["principal_fen"], 0), row["principal_fen"]),
            ("bonus is not negative", max(row["bonus_fen"], 0), row["bonus_fen"]),
        )
        mismatches += [
            Mismatch(merchant, member, name, want, got) for name, want, got in checks if want != got
        ]
    negative = (
        await WalletTransaction.filter(**scope)
        .filter(principal_after__lt=0)
        .values("merchant_id", "member_id", "principal_after")
    )
    negative += (
        await WalletTransaction.filter(**scope)
        .filter(bonus_after__lt=0)
        .values("merchant_id", "member_id", "bonus_after")
    )
    for row in negative:
        value = row.get("principal_after", row.get("bonus_after", 0))
        mismatches.append(Mismatch(row["merchant_id"], row["member_id"], "ledger row negative", 0, value))
    for member in sorted((set(principal) | set(bonus)) - seen):
        total = principal.get(member, 0) + bonus.get(member, 0)
        mismatches.append(Mismatch(merchant_id or 0, member, "transactions without an account", 0, total))
    return mismatches
