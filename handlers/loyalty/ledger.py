"""The points ledger: every change of a member's points goes through here.

Each posting runs in one transaction that first locks the member's account row (so postings on
one member serialize), replays an already-used idempotency key instead of posting twice, writes
one append-only `PointsTransaction`, and keeps the expiry lots in step:

  balance == sum(deltas);  sum(available lots' remaining) == max(balance, 0);  pending == pending lots.

Claw-back (documented policy): reversing an earn whose points were already spent takes what the
member still has and leaves the rest as a negative balance (a debt). Future credits repay the debt
before they fill a lot. Points of that earn that already expired are not taken again. No other
posting can take a balance below zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from handlers.core import queries
from handlers.core.errors import Conflict, DomainError, ErrorCode, NotFound, ValidationError
from handlers.core.queries import lock_member_row, sum_of
from handlers.rules.expiry import InsufficientPoints, Lot, allocate_spend
from models.points import LotStatus, PointsAccount, PointsDraw, PointsKind, PointsLot, PointsTransaction

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


async def lock_account(merchant_id: int, member_id: int) -> PointsAccount:
    """The member's account row, locked FOR UPDATE in the current transaction (created if missing)."""
    return await lock_member_row(PointsAccount, merchant_id, member_id)


async def _replay(
    merchant_id: int, member_id: int, key: str, kind: PointsKind, delta: int | None
) -> Posted | None:
    txn = await PointsTransaction.get_or_none(merchant_id=merchant_id, idempotency_key=key)
    if txn is None:
        return None
    if txn.member_id != member_id or txn.kind != kind or (delta is not None and txn.delta != delta):
        raise DomainError(
            "idempotency key was already used for a different request",
            code=ErrorCode.IDEMPOTENCY_MISMATCH,
            field="idempotency_key",
        )
    return Posted(txn.id, txn.member_id, txn.delta, PointsKind(txn.kind), txn.balance_after, replayed=True)


def _check_amount(amount: int) -> None:
    if not 0 < amount <= MAX_POSTING:
        raise ValidationError(f"points must be between 1 and {MAX_POSTING}", field="points")


async def _write(
    account: PointsAccount,
    delta: int,
    kind: PointsKind,
    key: str,
    *,
    reference: str,
    actor: str,
    reason: str,
    reverses_id: int | None = None,
) -> PointsTransaction:
    account.balance += delta
    if delta > 0 and kind != PointsKind.REVERSE:
        account.lifetime_earned += delta
    await account.save(update_fields=["balance", "lifetime_earned", "updated_at"])
    return await PointsTransaction.create(
        merchant_id=account.merchant_id,
        member_id=account.member_id,
        delta=delta,
        kind=kind,
        idempotency_key=key,
        reference=reference[:64],
        balance_after=account.balance,
        actor=actor[:32],
        reason=reason[:255],
        reverses_id=reverses_id,
    )


def _posted(txn: PointsTransaction) -> Posted:
    return Posted(txn.id, txn.member_id, txn.delta, PointsKind(txn.kind), txn.balance_after)


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


_CREDIT_TXN_SQL = """
    INSERT INTO points_transaction (merchant_id, member_id, delta, kind, idempotency_key, reference,
                                    balance_after, actor, reason, created_at)
    VALUES (:merchant, :member, :amount, :kind, :key, :reference, :balance, :actor, :reason, :created)
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING id
"""
_CREDIT_ACCOUNT_SQL = """
    UPDATE points_account SET balance = :balance, lifetime_earned = lifetime_earned + :amount,
                              updated_at = :created
    WHERE id = :account{only_if}
"""
_CREDIT_LOT_SQL = """
    INSERT INTO points_lot (merchant_id, member_id, source_id, source_key, amount, remaining, status,
                            earned_at, expires_at)
    SELECT :merchant, :member, {txn}, :key, :amount, :fill, :status, :now, :expires {source}
"""
# The posting, the balance and the lot in one statement (one round trip). Constant fragments only:
# every value is bound.
_CREDIT_SQL = (
    f"WITH txn AS ({_CREDIT_TXN_SQL}),"  # noqa: S608
    f" acc AS ({_CREDIT_ACCOUNT_SQL.format(only_if=' AND EXISTS (SELECT 1 FROM txn)')}),"
    f" lot AS ({_CREDIT_LOT_SQL.format(txn='id', source='FROM txn')})"
    " SELECT id FROM txn"
)


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
    """`credit` on an account the caller locked with `lock_account` in its open transaction.

    Every credit passes here (purchases, check-ins, grants), so it is hand-written SQL: the posting, the
    new balance and the lot in one statement. A key used before writes nothing and
    replays the earlier posting (or refuses a different request under it)."""
    _check_amount(amount)
    balance = account.balance + amount
    params = {
        "merchant": account.merchant_id, "member": account.member_id, "account": account.id,
        "amount": amount, "kind": kind.value, "key": key, "reference": reference[:64], "balance": balance,
        "actor": actor[:32], "reason": reason[:255], "created": datetime.now(UTC), "now": now,
        "expires": expires_at, "status": LotStatus.AVAILABLE.value,
        "fill": amount - min(amount, max(-account.balance, 0)),  # repay any claw-back debt first
    }
    rows = await queries.fetch_rows(_CREDIT_SQL, **params)
    if not rows:
        replayed = await _replay(account.merchant_id, account.member_id, key, kind, amount)
        if replayed is None:  # unreachable: the key's row exists, or the insert would have written
            raise RuntimeError(f"points credit {key!r} neither written nor found")
        return replayed
    account.balance = balance
    account.lifetime_earned += amount
    return Posted(int(rows[0]["id"]), account.member_id, amount, kind, balance)


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
        lot = await PointsLot.get_or_none(merchant_id=merchant_id, source_key=key)
        if lot is not None:
            return lot.id
        lot = await PointsLot.create(
            merchant_id=merchant_id,
            member_id=member_id,
            source_key=key,
            amount=amount,
            remaining=amount,
            status=LotStatus.PENDING,
            earned_at=now,
            available_at=available_at,
            expires_at=expires_at,
        )
        account.pending += amount
        await account.save(update_fields=["pending", "updated_at"])
        return lot.id


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
    """`debit` on an account the caller locked in its open transaction. When it raises
    `NotEnoughPoints`, the caller's transaction must roll back (it may have expired lapsed lots)."""
    _check_amount(amount)
    if kind not in DEBIT_KINDS:
        raise ValueError(f"{kind} is not a debit")
    if (replayed := await _replay(account.merchant_id, account.member_id, key, kind, -amount)) is not None:
        return replayed
    await _expire_locked(account, now)
    lots = await _spendable(account.member_id, now)
    try:
        plan = allocate_spend([Lot(lot.id, lot.remaining, lot.expires_at) for lot in lots], amount)
    except InsufficientPoints:
        raise NotEnoughPoints(
            f"积分不足：需要 {amount}，可用 {max(account.balance, 0)}", field="points"
        ) from None
    txn = await _write(account, -amount, kind, key, reference=reference, actor=actor, reason=reason)
    await _draw(txn, {lot.id: lot for lot in lots}, plan)
    return _posted(txn)


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
        raise ValidationError("this posting cannot be reversed", field="idempotency_key")
    async with in_transaction():
        account = await lock_account(merchant_id, original.member_id)
        replayed = await _replay(merchant_id, original.member_id, key, PointsKind.REVERSE, None)
        if replayed is not None:
            return replayed
        if await PointsTransaction.exists(reverses_id=original.id):
            raise Conflict("这笔积分已经撤销过了", field="idempotency_key")
        delta = -original.delta
        if original.delta > 0:
            await _expire_locked(account, now)
            delta += await _lapsed_from(original)
        txn = await _write(
            account,
            delta,
            PointsKind.REVERSE,
            key,
            reference=original.reference,
            actor=actor,
            reason=reason,
            reverses_id=original.id,
        )
        if original.delta > 0:
            await _claw_back(txn, original, -delta, now)
        else:
            await _restore(account, txn, original)
        return _posted(txn)


async def _lapsed_from(earn: PointsTransaction) -> int:
    """How many of an earn's points the expiry already took from its lot."""
    return await sum_of(
        PointsDraw.filter(lot__source_id=earn.id, transaction__kind=PointsKind.EXPIRE), "amount"
    )


async def _spendable(member_id: int, now: datetime) -> list[PointsLot]:
    return await PointsLot.filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now),
        member_id=member_id,
        status=LotStatus.AVAILABLE,
        remaining__gt=0,
    ).select_for_update()


async def _draw(txn: PointsTransaction, lots: dict[int, PointsLot], plan: list[tuple[int, int]]) -> None:
    for lot_id, take in plan:
        lot = lots[lot_id]
        lot.remaining -= take
        await lot.save(update_fields=["remaining"])
        await PointsDraw.create(transaction_id=txn.id, lot_id=lot_id, amount=take)


async def _claw_back(txn: PointsTransaction, original: PointsTransaction, amount: int, now: datetime) -> None:
    """Take the earned points back: from their own lot first, then soonest-expiring; the rest is debt."""
    lots = sorted(
        await _spendable(original.member_id, now),
        key=lambda lot: (
            lot.source_id != original.id,
            lot.expires_at is None,
            lot.expires_at or now,
            lot.id,
        ),
    )  # its own lot first, then soonest-expiring
    remaining = amount
    for lot in lots:
        if remaining == 0:
            break
        take = min(lot.remaining, remaining)
        lot.remaining -= take
        remaining -= take
        await lot.save(update_fields=["remaining"])
        await PointsDraw.create(transaction_id=txn.id, lot_id=lot.id, amount=take)


async def _restore(account: PointsAccount, txn: PointsTransaction, original: PointsTransaction) -> None:
    """Give back exactly the lots a spend drew from (after repaying any debt)."""
    debt = max(-(account.balance + original.delta), 0)  # debt before this reversal credited the account
    for draw in await PointsDraw.filter(transaction_id=original.id).order_by("id"):
        repay = min(debt, draw.amount)
        debt -= repay
        if draw.amount - repay:
            lot = await PointsLot.select_for_update().get(id=draw.lot_id)
            lot.remaining += draw.amount - repay
            await lot.save(update_fields=["remaining"])


async def _expire_locked(account: PointsAccount, now: datetime) -> Posted | None:
    """Expire the member's lapsed lots into one `expire` transaction (account already locked)."""
    lapsed = (
        await PointsLot.filter(
            member_id=account.member_id, status=LotStatus.AVAILABLE, remaining__gt=0, expires_at__lte=now
        )
        .order_by("id")
        .select_for_update()
    )
    total = sum(lot.remaining for lot in lapsed)
    if not total:
        return None
    # Unique per posting: the member's latest transaction id changes with every posting (the account
    # is locked), so an expiry after points were restored into an already-expired lot gets a new key.
    latest = await PointsTransaction.filter(member_id=account.member_id).order_by("-id").first()
    key = f"expire:{account.member_id}:after:{latest.id if latest else 0}"
    txn = await _write(
        account, -total, PointsKind.EXPIRE, key, reference="", actor="system", reason="积分到期"
    )
    await _draw(txn, {lot.id: lot for lot in lapsed}, [(lot.id, lot.remaining) for lot in lapsed])
    return _posted(txn)


async def expire_member(merchant_id: int, member_id: int, now: datetime) -> Posted | None:
    async with in_transaction():
        return await _expire_locked(await lock_account(merchant_id, member_id), now)


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
    lot_row = await PointsLot.get(id=lot_id)
    async with in_transaction():
        account = await lock_account(lot_row.merchant_id, lot_row.member_id)
        lot = await PointsLot.select_for_update().get(id=lot_id)
        if lot.status != LotStatus.PENDING:
            return False
        account.pending -= lot.amount
        txn = await _write(
            account,
            lot.amount,
            PointsKind.EARN_PURCHASE,
            lot.source_key,
            reference=lot.source_key[:64],
            actor="system",
            reason="待生效积分到账",
        )
        lot.status, lot.source_id = LotStatus.AVAILABLE, txn.id
        lot.remaining = lot.amount - min(lot.amount, max(-(account.balance - lot.amount), 0))
        await lot.save(update_fields=["status", "source_id", "remaining"])
        await account.save(update_fields=["pending"])
        return True


async def void_pending(merchant_id: int, member_id: int, key: str) -> bool:
    """Void pending points inside the refund window. False if they were already released or voided."""
    async with in_transaction():
        account = await lock_account(merchant_id, member_id)
        lot = await PointsLot.select_for_update().get_or_none(
            merchant_id=merchant_id, member_id=member_id, source_key=key
        )
        if lot is None or lot.status != LotStatus.PENDING:
            return False
        lot.status, lot.remaining = LotStatus.VOIDED, 0
        await lot.save(update_fields=["status", "remaining"])
        account.pending -= lot.amount
        await account.save(update_fields=["pending", "updated_at"])
        return True
