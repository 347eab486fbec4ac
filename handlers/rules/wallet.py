"""Stored value (储值) rules: top-up bonus tiers and how a payment splits into principal and bonus.

Policy: a payment spends PRINCIPAL first and bonus last; a refunded payment gives back exactly the
split it took; a cash withdrawal returns principal only — bonus is never paid out in cash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handlers.rules import _parse as p
from handlers.rules.errors import RuleError

MAX_TOP_UP_FEN = 100_000_000  # one million yuan in one top-up
MAX_BONUS_TIERS = 20


@dataclass(frozen=True, slots=True)
class BonusTier:
    """充 `min_fen` 送 `bonus_fen`."""

    min_fen: int
    bonus_fen: int


@dataclass(frozen=True, slots=True)
class StoredValuePolicy:
    """Top-up bonus tiers, ascending; the highest tier a top-up reaches applies, once."""

    bonus_tiers: tuple[BonusTier, ...] = ()


@dataclass(frozen=True, slots=True)
class Split:
    principal_fen: int
    bonus_fen: int

    @property
    def total_fen(self) -> int:
        return self.principal_fen + self.bonus_fen


class InsufficientBalance(Exception):
    def __init__(self, available_fen: int) -> None:
        super().__init__(f"available {available_fen}")
        self.available_fen = available_fen


def top_up_bonus(amount_fen: int, policy: StoredValuePolicy) -> int:
    """The bonus a top-up of `amount_fen` earns: the highest tier reached (0 below the first)."""
    reached = [tier.bonus_fen for tier in policy.bonus_tiers if amount_fen >= tier.min_fen]
    return max(reached, default=0)


def split_payment(principal_fen: int, bonus_fen: int, amount_fen: int) -> Split:
    """Take `amount_fen` from the balance, principal first; InsufficientBalance if the total is short."""
    if amount_fen <= 0:
        raise ValueError("amount must be positive")
    if amount_fen > principal_fen + bonus_fen:
        raise InsufficientBalance(max(principal_fen, 0) + max(bonus_fen, 0))
    from_principal = min(principal_fen, amount_fen)
    return Split(from_principal, amount_fen - from_principal)


def validate_stored_value(raw: object) -> StoredValuePolicy:
    """Strict parse of `{"bonus_tiers": [{"min_fen": 10000, "bonus_fen": 2000}, …]}`.

    Thresholds strictly ascending, bonuses never smaller for a larger top-up, each bonus at most its
    threshold (充100送100 at most).
    """
    top = p.obj(raw, "", optional=("bonus_tiers",))
    rows = p.items(top.get("bonus_tiers", []), "bonus_tiers")
    if len(rows) > MAX_BONUS_TIERS:
        raise RuleError("bonus_tiers", f"最多 {MAX_BONUS_TIERS} 档")
    tiers: list[BonusTier] = []
    for i, row in enumerate(rows):
        where = f"bonus_tiers[{i}]"
        item = p.obj(row, where, required=("min_fen", "bonus_fen"))
        min_fen = p.integer(item["min_fen"], f"{where}.min_fen", lo=1, hi=MAX_TOP_UP_FEN)
        bonus_fen = p.integer(item["bonus_fen"], f"{where}.bonus_fen", lo=1, hi=min_fen)
        if tiers and min_fen <= tiers[-1].min_fen:
            raise RuleError(f"{where}.min_fen", "充值门槛应逐档递增")
        if tiers and bonus_fen < tiers[-1].bonus_fen:
            raise RuleError(f"{where}.bonus_fen", "更高档的赠送金额不能更少")
        tiers.append(BonusTier(min_fen, bonus_fen))
    return StoredValuePolicy(tuple(tiers))


def stored_value_to_dict(policy: StoredValuePolicy) -> dict[str, Any]:
    return {"bonus_tiers": [{"min_fen": t.min_fen, "bonus_fen": t.bonus_fen} for t in policy.bonus_tiers]}
