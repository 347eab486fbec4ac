"""Manual points grants and deductions by a manager, each with a reason and an audit row.

A positive delta is a `grant` credit (expiring per the programme's policy), a negative one an
`adjust` debit, refused with the reason when the member has too few points (nothing changes then).
The caller's idempotency key makes a retried request replay the first result instead of posting
twice; the audit row is written in the same transaction as the posting, so there is exactly one
per grant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import ValidationError
from handlers.core.tasks import Effects
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger
from handlers.members import lookup as members
from handlers.notices.delivery import tell
from handlers.rules.expiry import expiry_date
from models.member import Member
from models.merchant import Merchant
from models.points import PointsKind
from models.staff import Staff

MAX_REASON = 200
MAX_KEY = 100


@dataclass(frozen=True, slots=True)
class Grant:
    member: Member
    posted: ledger.Posted


def ledger_key(idempotency_key: str) -> str:
    """Client keys live in their own namespace so they can never collide with system postings."""
    return f"grant:{idempotency_key}"


def _check(delta: int, reason: str, idempotency_key: str) -> str:
    if delta == 0 or abs(delta) > ledger.MAX_POSTING:
        raise ValidationError(f"delta: 非零整数，绝对值不超过 {ledger.MAX_POSTING}", field="delta")
    reason = reason.strip()
    if not 1 <= len(reason) <= MAX_REASON:
        raise ValidationError(f"reason: 请填写 1–{MAX_REASON} 个字的原因", field="reason")
    if not 1 <= len(idempotency_key) <= MAX_KEY:
        raise ValidationError(f"idempotency_key: 1–{MAX_KEY} 个字符", field="idempotency_key")
    return reason


async def adjust(
    merchant: Merchant,
    member_code: str,
    delta: int,
    *,
    reason: str,
    idempotency_key: str,
    staff: Staff,
    now: datetime,
    effects: Effects,
) -> Grant:
    """Credit (delta > 0) or deduct (delta < 0) points by hand; idempotent by `idempotency_key`. The
    member is told (points credited or debited, with the reason)."""
    reason = _check(delta, reason, idempotency_key)
    member = await members.resolve(merchant, code=member_code)  # not-found for anything that cannot be a code
    actor = f"staff:{staff.id}"
    key = ledger_key(idempotency_key)
    async with in_transaction():
        if delta > 0:
            policy = (await loyalty_config.program(merchant.id)).expiry
            posted = await ledger.credit(
                merchant.id,
                member.id,
                delta,
                PointsKind.GRANT,
                key=key,
                now=now,
                expires_at=expiry_date(now, policy, merchant.timezone),
                reference=member.code,
                actor=actor,
                reason=reason,
            )
        else:
            try:
                posted = await ledger.debit(
                    merchant.id,
                    member.id,
                    -delta,
                    PointsKind.ADJUST,
                    key=key,
                    now=now,
                    reference=member.code,
                    actor=actor,
                    reason=reason,
                )
            except ledger.NotEnoughPoints as exc:
                raise ledger.NotEnoughPoints(exc.message, field="delta") from None
        if not posted.replayed:
            await audit_log.record(
                merchant.id,
                actor,
                "points.grant" if delta > 0 else "points.deduct",
                member.code,
                delta=delta,
                reason=reason,
                transaction_id=posted.transaction_id,
                idempotency_key=idempotency_key,
            )
    if not posted.replayed:
        await tell(
            effects,
            "points_credited" if delta > 0 else "points_debited",
            merchant_id=merchant.id,
            member_id=member.id,
            event_key=key,
            context={"reason": reason, "points": abs(delta), "balance": posted.balance_after},
        )
    return Grant(member, posted)
