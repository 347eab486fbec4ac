"""Registration and profile-completion bonuses: the `member.registered` and `member.profile_completed`
effects (`handlers.effects`).

`registration_bonus` credits the programme's `registration_bonus` (and, when the programme's referral
trigger is registration, awards the referrer chain); `profile_bonus` credits `profile_bonus`.
Each bonus uses a per-member ledger key (`registration:<id>`, `profile:<id>`), so it is posted at
most once per member however often — or however concurrently — its effect runs. Points expire per the
programme's expiry policy. Anonymised and blocked members get nothing; a bonus set to 0 posts nothing.
"""

from __future__ import annotations

from datetime import datetime

from handlers.core.tasks import Effects
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger, referrals
from handlers.members import blocking
from handlers.rules.expiry import expiry_date
from models.member import Member
from models.merchant import Merchant
from models.points import PointsKind


def registration_key(member_id: int) -> str:
    return f"registration:{member_id}"


def profile_key(member_id: int) -> str:
    return f"profile:{member_id}"


async def _bonus(
    merchant: Merchant, member: Member, kind: PointsKind, key: str, reason: str, now: datetime
) -> None:
    if member.anonymized_at is not None or blocking.is_blocked(member):
        return
    program = await loyalty_config.program(merchant.id)
    amount = program.registration_bonus if kind == PointsKind.EARN_REGISTRATION else program.profile_bonus
    if amount <= 0:
        return
    await ledger.credit(
        merchant.id,
        member.id,
        amount,
        kind,
        key=key,
        now=now,
        expires_at=expiry_date(now, program.expiry, merchant.timezone),
        reason=reason,
    )


async def registration_bonus(member: Member, *, now: datetime, effects: Effects) -> None:
    """The registration bonus, then registration-triggered referral awards."""
    merchant = await Merchant.get(id=member.merchant_id)
    await _bonus(merchant, member, PointsKind.EARN_REGISTRATION, registration_key(member.id), "注册奖励", now)
    if member.referrer_id is not None and member.anonymized_at is None:
        await referrals.award(merchant, member.id, trigger="registration", now=now, effects=effects)


async def profile_bonus(member: Member, *, now: datetime) -> None:
    """The profile-completion bonus."""
    merchant = await Merchant.get(id=member.merchant_id)
    await _bonus(merchant, member, PointsKind.EARN_PROFILE, profile_key(member.id), "完善资料奖励", now)
