"""`memberbot audit points`: the ledger invariants, checked for every member."""

from __future__ import annotations

from dataclasses import dataclass

from tortoise.functions import Sum

from models.points import LotStatus, PointsAccount, PointsLot, PointsTransaction


@dataclass(frozen=True, slots=True)
class Mismatch:
    merchant_id: int
    member_id: int
    check: str
    expected: int
    actual: int

    def __str__(self) -> str:
        return (
            f"merchant {self.merchant_id} member {self.member_id}: {self.check} "
            f"expected {self.expected}, found {self.actual}"
        )


async def _sums(query: object, group: str, column: str) -> dict[int, int]:
    rows = await query.group_by(group).annotate(total=Sum(column)).values(group, "total")  # type: ignore[attr-defined]
    return {int(row[group]): int(row["total"] or 0) for row in rows}


async def audit_points(merchant_id: int | None = None) -> list[Mismatch]:
    """Every account: balance == Σ deltas; Σ available lots == max(balance, 0); pending == Σ pending lots."""
    scope = {"merchant_id": merchant_id} if merchant_id is not None else {}
    accounts = await PointsAccount.filter(**scope).values("merchant_id", "member_id", "balance", "pending")
    deltas = await _sums(PointsTransaction.filter(**scope), "member_id", "delta")
    available = await _sums(PointsLot.filter(status=LotStatus.AVAILABLE, **scope), "member_id", "remaining")
    pending = await _sums(PointsLot.filter(status=LotStatus.PENDING, **scope), "member_id", "remaining")
    mismatches: list[Mismatch] = []
    seen: set[int] = set()
    for row in accounts:
        member, merchant, balance = row["member_id"], row["merchant_id"], row["balance"]
        seen.add(member)
        checks = (
            ("balance = sum of transactions", deltas.get(member, 0), balance),
            ("available lots = balance", max(balance, 0), available.get(member, 0)),
            ("pending lots = pending", row["pending"], pending.get(member, 0)),
        )
        mismatches += [
            Mismatch(merchant, member, name, want, got) for name, want, got in checks if want != got
        ]
    for member in sorted(set(deltas) - seen):
        mismatches.append(
            Mismatch(merchant_id or 0, member, "transactions without an account", 0, deltas[member])
        )
    return mismatches
