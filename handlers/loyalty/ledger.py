"""The points ledger: every change of a member's points goes through here.

Each posting runs in one transaction that first locks the member's account row (so postings on
one member serialize), replays an already-used idempotency key instead of posting twice, writes
one append-only `PointsTransaction`, and keeps the expiry lots in step:

  balance == sum(deltas);  sum(available lots' remaining) == max(balance, 0);  pending == pending lots.

This module decides what to post (amounts, keys, which lots a spend draws from by the pure rule
`allocate_spend`); the PostgreSQL functions of migration 0010 (`memberbot_points_*`) write it, and
nothing else writes these tables: the check-in function posts through them too.

Claw-back (documented policy): reversing an earn whose points were already spent takes what the
member still has and leaves the rest as a negative balance (a debt). Future credits repay the debt
before they fill a lot. Points of that earn that already expired are not taken again. No other
posting can take a balance below zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from handlers.core import queries
from handlers.core.errors import (
    Conflict,
    DomainError,
    ErrorCode,
    IdempotencyMismatch,
    NotFound,
    ValidationError,
)
from handlers.rules.expiry import InsufficientPoints, Lot, allocate_spend
from models.points import LotStatus, PointsAccount, PointsKind, PointsLot, PointsTransaction

log = logging.getLogger(__name__)
DEBIT_KINDS = frozenset(
    {
        PointsKind.SPEND_REDEMPTION,
        PointsKind.SPEND_OFFSET,
        PointsKind.SPEND_UPGRADE,
        PointsKind.SPEND_MAKEUP,
        PointsKind.ADJUST,
    }
)
MAX_POSTING = 100_000_000


@dataclass(frozen=True, slots=True)
class Posted:
    transaction_id: int
    member_id: int
    delta: int
    kind: PointsKind
    balance_after: int
    replayed: bool = False


class NotEnoughPoints(DomainError):
    code = ErrorCode.INSUFFICIENT_POINTS


_ACCOUNT_SQL = "SELECT * FROM memberbot_points_account(:merchant, :member)"


async def lock_account(merchant_id: int, member_id: int) -> PointsAccount:
    """The member's account row, locked FOR UPDATE in the current transaction (opened if missing).
    A member of another merchant, or none, is 404 member_not_found."""
    return await queries.member_row(PointsAccount, _ACCOUNT_SQL, merchant_id, member_id)


def _replayed(
    txn: PointsTransaction | dict[str, Any], member_id: int, kind: PointsKind, delta: int | None
) -> Posted:
    row = (
        txn
        if isinstance(txn, dict)
        else {
            "id": txn.id,
            "member_id": txn.member_id,
            "kind": txn.kind,
            "delta": txn.delta,
            "balance_after": txn.balance_after,
        }
    )
    if row["member_id"] != member_id or row["kind"] != kind or (delta is not None and row["delta"] != delta):
        raise IdempotencyMismatch()
    return Posted(
        row["id"], row["member_id"], row["delta"], PointsKind(row["kind"]), row["balance_after"], True
    )


async def _replay(
    merchant_id: int, member_id: int, key: str, kind: PointsKind, delta: int | None
) -> Posted | None:
    txn = await PointsTransaction.get_or_none(merchant_id=merchant_id, idempotency_key=key)
    return None if txn is None else _replayed(txn, member_id, kind, delta)


async def _written_or_replayed(
    rows: list[dict[str, Any]], account: PointsAccount, delta: int, kind: PointsKind, key: str
) -> Posted:
    """The posting a writer function returned, or (no row: the key was used) the earlier one."""
    if not rows:
        replayed = await _replay(account.merchant_id, account.member_id, key, kind, delta)
        if replayed is None:  # unreachable: the key's row exists, or the writer would have written
            raise RuntimeError(f"points posting {key!r} neither written nor found")
        return replayed
    account.balance = int(rows[0]["balance_after"])
    if delta > 0 and kind != PointsKind.REVERSE:
        account.lifetime_earned += delta
    return Posted(int(rows[0]["transaction_id"]), account.member_id, delta, kind, account.balance)


def _check_amount(amount: int) -> None:
    if not 0 < amount <= MAX_POSTING:
        raise ValidationError(f"points 须在 1 到 {MAX_POSTING} 之间", field="points")


async def credit(
    merchant_id: int,
    member_id: int,
    amount: int,
    kind: PointsKind,
    *,
    key: str,
    now: datetime,
    expires_at: datetime | None,
    reference: str = "",
    actor: str = "system",
    reason: str = "",
) -> Posted:
    """Add points now, as a lot expiring at `expires_at` (None: never)."""
    _check_amount(amount)
    async with in_transaction():
        account = await lock_account(merchant_id, member_id)
        return await credit_locked(
            account,
            amount,
            kind,
            key=key,
            now=now,
            expires_at=expires_at,
            reference=reference,
            actor=actor,
            reason=reason,
        )


_CREDIT_SQL = """
SELECT transaction_id, balance_after FROM memberbot_points_credit(
    :account, :amount, :kind, :key, :reference, :actor, :reason, :now, :expires)
"""


async def credit_locked(
    account: PointsAccount,
    amount: int,
    kind: PointsKind,
    *,
    key: str,
    now: datetime,
    expires_at: datetime | None,
    reference: str = "",
    actor: str = "system",
    reason: str = "",
) -> Posted:
    """`credit` on an account the caller locked with `lock_account` in its open transaction: one round
    trip. A key used before writes nothing and replays the earlier posting (or refuses a different
    request under it)."""
    _check_amount(amount)
    rows = await queries.fetch_rows(
        _CREDIT_SQL,
        account=account.id,
        amount=amount,
        kind=kind.value,
        key=key,
        reference=reference,
        actor=actor,
        reason=reason,
        now=now,
        expires=expires_at,
    )
    return await _written_or_replayed(rows, account, amount, kind, key)


_HOLD_SQL = "SELECT memberbot_points_hold(:account, :amount, :key, :now, :available, :expires) AS lot"


async def hold_pending(
    merchant_id: int,
    member_id: int,
    amount: int,
    *,
    key: str,
    now: datetime,
    available_at: datetime,
    expires_at: datetime | None,
) -> int:
    """Hold purchase points as pending until `available_at` (the refund window). Returns the lot id."""
    _check_amount(amount)
    async with in_transaction():
        account = await lock_account(merchant_id, member_id)
        row = await queries.fetch_one(
            _HOLD_SQL,
            account=account.id,
            amount=amount,
            key=key,
            now=now,
            available=available_at,
            expires=expires_at,
        )
        return int(row["lot"])


async def debit(
    merchant_id: int,
    member_id: int,
    amount: int,
    kind: PointsKind,
    *,
    key: str,
    now: datetime,
    reference: str = "",
    actor: str = "system",
    reason: str = "",
) -> Posted:
    """Spend points, soonest-expiring lots first. Refused (nothing changes) if the balance is short."""
    async with in_transaction():
        account = await lock_account(merchant_id, member_id)
        return await debit_locked(
            account, amount, kind, key=key, now=now, reference=reference, actor=actor, reason=reason
        )


# Under the account lock, in one round trip: a posting already made under the key, and the lots a
# spend may draw from at `now` (lapsed ones are left to the expiry that precedes the spend).
_SPEND_READ_SQL = """
SELECT 'txn' AS what, t.id, t.member_id, t.kind, t.delta, t.balance_after, NULL::timestamptz AS expires_at,
       0 AS remaining
  FROM points_transaction t WHERE t.merchant_id = :merchant AND t.idempotency_key = :key
UNION ALL
SELECT 'lot', l.id, l.member_id, NULL, NULL, NULL, l.expires_at, l.remaining
  FROM points_lot l
 WHERE l.member_id = :member AND l.status = 'available' AND l.remaining > 0
   AND (l.expires_at IS NULL OR l.expires_at > :now)
"""
_EXPIRE_SQL = "SELECT transaction_id, balance_after, amount FROM memberbot_points_expire(:account, :now)"
_DEBIT_SQL = """
SELECT transaction_id, balance_after FROM memberbot_points_debit(
    :account, :amount, :kind, :key, :reference, :actor, :reason, :reverses, :lots, :takes)
"""


async def debit_locked(
    account: PointsAccount,
    amount: int,
    kind: PointsKind,
    *,
    key: str,
    now: datetime,
    reference: str = "",
    actor: str = "system",
    reason: str = "",
) -> Posted:
    """`debit` on an account the caller locked in its open transaction. Lapsed lots expire first (their
    own posting); the spend then draws from the soonest-expiring lots. `NotEnoughPoints` changes nothing."""
    _check_amount(amount)
    if kind not in DEBIT_KINDS:
        raise ValueError(f"{kind} is not a debit")
    rows = await queries.fetch_rows(
        _SPEND_READ_SQL, merchant=account.merchant_id, key=key, member=account.member_id, now=now
    )
    if done := [row for row in rows if row["what"] == "txn"]:
        return _replayed(done[0], account.member_id, kind, -amount)
    lots = [Lot(row["id"], row["remaining"], row["expires_at"]) for row in rows]
    try:
        plan = allocate_spend(lots, amount)
    except InsufficientPoints:
        raise NotEnoughPoints(
            f"积分不足：需要 {amount}，可用 {max(account.balance, 0)}", field="points"
        ) from None
    await _expire(account, now)
    written = await queries.fetch_rows(
        _DEBIT_SQL,
        account=account.id,
        amount=amount,
        kind=kind.value,
        key=key,
        reference=reference,
        actor=actor,
        reason=reason,
        reverses=None,
        lots=[lot for lot, _ in plan],
        takes=[take for _, take in plan],
    )
    return await _written_or_replayed(written, account, -amount, kind, key)


async def _expire(account: PointsAccount, now: datetime) -> Posted | None:
    """Expire the member's lapsed lots into one `expire` posting (account already locked)."""
    rows = await queries.fetch_rows(_EXPIRE_SQL, account=account.id, now=now)
    if not rows:
        return None
    account.balance = int(rows[0]["balance_after"])
    return Posted(
        int(rows[0]["transaction_id"]),
        account.member_id,
        -int(rows[0]["amount"]),
        PointsKind.EXPIRE,
        account.balance,
    )


_RESTORE_SQL = """
SELECT transaction_id, balance_after FROM memberbot_points_restore(
    :account, :amount, :key, :reference, :actor, :reason, :reverses, :lots, :gives)
"""
# What a claw-back needs once lapsed lots have expired: how much of the earn the expiry took, and the
# lots the member still has.
_CLAW_BACK_READ_SQL = """
SELECT 'lapsed' AS what, 0 AS id, COALESCE(SUM(d.amount), 0)::integer AS amount, NULL::bigint AS source_id,
       NULL::timestamptz AS expires_at
  FROM points_draw d JOIN points_lot l ON l.id = d.lot_id JOIN points_transaction t ON t.id = d.transaction_id
 WHERE l.source_id = :earn AND t.kind = 'expire'
UNION ALL
SELECT 'lot', l.id, l.remaining, l.source_id, l.expires_at FROM points_lot l
 WHERE l.member_id = :member AND l.status = 'available' AND l.remaining > 0
   AND (l.expires_at IS NULL OR l.expires_at > :now)
"""
_DRAWS_SQL = "SELECT lot_id, amount FROM points_draw WHERE transaction_id = :txn ORDER BY id"


async def reverse(
    merchant_id: int, original_key: str, *, key: str, now: datetime, actor: str = "system", reason: str = ""
) -> Posted:
    """Undo one posting exactly once. A spend is restored into the lots it drew. An earn is clawed back,
    possibly into debt (see the module docstring), except the part of it that already lapsed: expired
    points were taken once by the expiry and are not taken again."""
    original = await PointsTransaction.get_or_none(merchant_id=merchant_id, idempotency_key=original_key)
    if original is None:
        raise NotFound("没有找到要撤销的积分记录", field="idempotency_key")
    if original.kind in (PointsKind.REVERSE, PointsKind.EXPIRE):
        raise ValidationError("idempotency_key 对应的是撤销或过期记录，不能再撤销", field="idempotency_key")
    async with in_transaction():
        account = await lock_account(merchant_id, original.member_id)
        replayed = await _replay(merchant_id, original.member_id, key, PointsKind.REVERSE, None)
        if replayed is not None:
            return replayed
        if await PointsTransaction.exists(reverses_id=original.id):
            raise Conflict("这笔积分已经撤销过了", field="idempotency_key")
        if original.delta > 0:
            return await _claw_back(account, original, key, now=now, actor=actor, reason=reason)
        draws = await queries.fetch_rows(_DRAWS_SQL, txn=original.id)
        rows = await queries.fetch_rows(
            _RESTORE_SQL,
            account=account.id,
            amount=-original.delta,
            key=key,
            reference=original.reference,
            actor=actor,
            reason=reason,
            reverses=original.id,
            lots=[d["lot_id"] for d in draws],
            gives=[d["amount"] for d in draws],
        )
        return await _written_or_replayed(rows, account, -original.delta, PointsKind.REVERSE, key)


async def _claw_back(
    account: PointsAccount, earn: PointsTransaction, key: str, *, now: datetime, actor: str, reason: str
) -> Posted:
    """Take an earn's points back: from its own lot first, then soonest-expiring; the rest is debt."""
    await _expire(account, now)
    rows = await queries.fetch_rows(_CLAW_BACK_READ_SQL, earn=earn.id, member=account.member_id, now=now)
    amount = earn.delta - next(row["amount"] for row in rows if row["what"] == "lapsed")
    lots = sorted(
        (row for row in rows if row["what"] == "lot"),
        key=lambda row: (
            row["source_id"] != earn.id,
            row["expires_at"] is None,
            row["expires_at"] or now,
            row["id"],
        ),
    )  # its own lot first, then soonest-expiring
    plan: list[tuple[int, int]] = []
    left = amount
    for row in lots:
        if left == 0:
            break
        take = min(row["amount"], left)
        plan.append((row["id"], take))
        left -= take
    written = await queries.fetch_rows(
        _DEBIT_SQL,
        account=account.id,
        amount=amount,
        kind=PointsKind.REVERSE.value,
        key=key,
        reference=earn.reference,
        actor=actor,
        reason=reason,
        reverses=earn.id,
        lots=[lot for lot, _ in plan],
        takes=[take for _, take in plan],
    )
    return await _written_or_replayed(written, account, -amount, PointsKind.REVERSE, key)


async def expire_member(merchant_id: int, member_id: int, now: datetime) -> Posted | None:
    async with in_transaction():
        return await _expire(await lock_account(merchant_id, member_id), now)


async def expire_lapsed(now: datetime, merchant_id: int | None = None) -> int:
    """The expiry job: one `expire` transaction per member with lapsed points. Idempotent."""
    query = PointsLot.filter(status=LotStatus.AVAILABLE, remaining__gt=0, expires_at__lte=now)
    if merchant_id is not None:
        query = query.filter(merchant_id=merchant_id)
    pairs = await query.distinct().values_list("merchant_id", "member_id")
    expired = 0
    for lot_merchant, member_id in sorted(set(pairs)):
        try:
            if await expire_member(lot_merchant, member_id, now) is not None:
                expired += 1
        except Exception:  # one member's failure must not stop everyone else's expiry
            log.exception("points expiry failed for a member", extra={"member_id": member_id})
    return expired


async def release_pending(now: datetime, merchant_id: int | None = None) -> int:
    """Pending lots whose refund window has passed become available points (one earn each)."""
    query = PointsLot.filter(status=LotStatus.PENDING, available_at__lte=now)
    if merchant_id is not None:
        query = query.filter(merchant_id=merchant_id)
    released = 0
    lot_ids: list[int] = await query.order_by("id").values_list("id", flat=True)  # type: ignore[assignment]
    for lot_id in lot_ids:
        try:
            if await _release_one(lot_id):
                released += 1
        except Exception:  # one lot's failure must not hold back everyone else's points
            log.exception("pending points release failed", extra={"lot_id": lot_id})
    return released


async def _release_one(lot_id: int) -> bool:
    lot = await PointsLot.get(id=lot_id)
    async with in_transaction():
        account = await lock_account(lot.merchant_id, lot.member_id)
        row = await queries.fetch_one(_RELEASE_SQL, account=account.id, lot=lot_id)
        return bool(row["released"])


_RELEASE_SQL = "SELECT memberbot_points_release(:account, :lot) AS released"
_VOID_SQL = "SELECT memberbot_points_void(:account, :key) AS voided"


async def void_pending(merchant_id: int, member_id: int, key: str) -> bool:
    """Void pending points inside the refund window. False if they were already released or voided."""
    async with in_transaction():
        account = await lock_account(merchant_id, member_id)
        return bool((await queries.fetch_one(_VOID_SQL, account=account.id, key=key))["voided"])
