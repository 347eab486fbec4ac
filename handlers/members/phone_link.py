"""An imported member linked to the follower who proves their phone (issue 11 §1, bulk import).

A member created by an import (`handlers.member_import`) has a phone and no WeChat identity. When that
person follows the Official Account, `registration.subscribe` creates a member for their openid (the
follow says nothing of a phone); when they then give their phone in the registration dialog
(`bot/dialog/profile.py`, the step that asks it), this module links them:

- **Rule.** The follower's member F and the imported member I are linked when all hold: the same
  merchant; I came from an import (`source = import`), is not erased, and has no Official Account
  openid yet; I's phone is the number the follower gave, and no other such member has it (two would be
  ambiguous: nothing is linked); the follower proved the number with the one-time code sent to it by SMS
  (`send_code` / `check_code`: 6 digits, 10 minutes, 5 tries, one SMS a minute per follower and
  per number); and F is new: no
  purchase, mall order, stored value or credit of its own (whatever it has would be left behind).
- **Link.** One transaction locks both member rows (in id order), checks the rule again under the
  locks, moves F's WeChat identity (openid, its keyed digest, unionid and mini-program openid, those I
  lacks) to I, and retires F: no identity left, unsubscribed, blocked with the reason
  「已并入会员 <I's code>」, so nothing more is earned or spent on it. I keeps its points, tier, stored
  value and credit. The `members.linked` audit-log row names both members (phone masked).
- **Races.** Two followers proving the same phone at once: the second finds I's openid already set
  under the lock and is told the number belongs to another member (`Outcome.TAKEN`); the same follower
  twice (WeChat's duplicate delivery): the second finds F already retired and answers the first's link
  (`Outcome.LINKED`). The unique (merchant, openid) key is the lasting guarantee.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from redis.asyncio import Redis
from tortoise.transactions import in_transaction

from handlers.core import audit_log, queries
from handlers.members.profile import mask_phone
from models.member import Member, MemberSource
from models.merchant import Merchant

log = logging.getLogger(__name__)

CODE_DIGITS = 6
CODE_TTL_SECONDS = 600
RESEND_SECONDS = 60
MAX_TRIES = 5


class _Sent(Protocol):
    @property
    def ok(self) -> bool: ...


class SmsSender(Protocol):
    """The SMS provider (`handlers.campaigns.sms`'s, which this package may not import: campaigns
    depend on members)."""

    async def send(self, phone: str, template_id: str, params: Sequence[str], *, session: str) -> _Sent: ...


class Outcome(StrEnum):
    LINKED = "linked"  # the follower is now the imported member
    TAKEN = "taken"  # the imported member was linked to someone else meanwhile
    NOT_NEW = "not_new"  # the follower's own member has history: nothing linked
    NONE = "none"  # no imported member to link (any more)


class SendResult(StrEnum):
    SENT = "sent"
    TOO_SOON = "too_soon"  # one SMS a minute
    BUSY = "busy"  # the number had a code less than a minute ago (asked by another follower)
    FAILED = "failed"  # the provider refused or could not be reached


@dataclass(frozen=True, slots=True)
class Link:
    outcome: Outcome
    member: Member | None = None  # the member the follower is now (LINKED)


@dataclass(frozen=True, slots=True)
class PhoneCodes:
    """What sends and checks the one-time codes: Redis, the SMS provider and the code's SMS template
    (settings `SMS_VERIFY_TEMPLATE_ID`; without one nothing can be proved, so nothing is linked)."""

    redis: Redis
    sms: SmsSender
    template_id: str

    async def send(self, merchant: Merchant, member: Member, phone: str, *, secret: bytes) -> SendResult:
        return await send_code(
            self.redis, self.sms, merchant, member, phone, secret=secret, template_id=self.template_id
        )

    async def check(
        self, merchant: Merchant, member: Member, phone: str, code: str, *, secret: bytes
    ) -> bool:
        return await check_code(self.redis, merchant, member, phone, code, secret=secret)


_CANDIDATES_SQL = """
SELECT * FROM member
 WHERE merchant_id = :merchant AND phone = :phone AND source = :source
   AND (openid IS NULL OR CAST(:linked_too AS boolean)) AND anonymized_at IS NULL AND id <> :member
 ORDER BY id LIMIT 2
"""


async def candidate(
    merchant: Merchant, member: Member, phone: str, *, linked_too: bool = False
) -> Member | None:
    """The one imported member without an Official Account identity that has this phone (None: none,
    or several: ambiguous). `linked_too`: also one linked meanwhile (`link` then answers `TAKEN`)."""
    rows = await queries.fetch_rows(
        _CANDIDATES_SQL,
        merchant=merchant.id,
        phone=phone,
        source=MemberSource.IMPORT.value,
        linked_too=linked_too,
        member=member.id,
    )
    return queries.as_model(Member, rows[0]) if len(rows) == 1 else None


def _key(merchant_id: int, member_id: int) -> str:
    return f"phone_link:{merchant_id}:{member_id}"


def _digest(secret: bytes, phone: str, code: str) -> str:
    return hmac.new(secret, f"{phone}:{code}".encode(), hashlib.sha256).hexdigest()


async def send_code(
    redis: Redis,
    sms: SmsSender,
    merchant: Merchant,
    member: Member,
    phone: str,
    *,
    secret: bytes,
    template_id: str,
) -> SendResult:
    """Text a fresh one-time code to `phone` for `member` (the previous one stops working)."""
    key = _key(merchant.id, member.id)
    to_phone = f"phone_link:{merchant.id}:to:{phone}"  # also one a minute per number, whoever asks
    if not await redis.set(f"{key}:sent", "1", ex=RESEND_SECONDS, nx=True):
        return SendResult.TOO_SOON
    if not await redis.set(to_phone, "1", ex=RESEND_SECONDS, nx=True):
        await redis.delete(f"{key}:sent")
        return SendResult.BUSY
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping={"phone": phone, "digest": _digest(secret, phone, code), "tries": 0})
        pipe.expire(key, CODE_TTL_SECONDS)
        await pipe.execute()
    try:
        ok = (await sms.send(phone, template_id, [code], session=f"link:{member.id}")).ok
    except Exception:  # the provider's network or its refusal: no code now, the dialog goes on
        log.warning("phone verification SMS not sent", exc_info=True, extra={"merchant": merchant.slug})
        ok = False
    if not ok:
        await redis.delete(key, f"{key}:sent", to_phone)
        return SendResult.FAILED
    return SendResult.SENT


async def check_code(
    redis: Redis, merchant: Merchant, member: Member, phone: str, code: str, *, secret: bytes
) -> bool:
    """True once for the code last sent to `phone` (it is used up); a wrong code counts a try, and the
    fifth wrong one voids the code."""
    key = _key(merchant.id, member.id)
    stored = await redis.hgetall(key)  # type: ignore[misc]
    if not stored or stored.get(b"phone", b"").decode() != phone:
        return False
    if hmac.compare_digest(stored[b"digest"].decode(), _digest(secret, phone, code.strip())):
        return bool(await redis.delete(key))  # one of two concurrent right answers wins
    if await redis.hincrby(key, "tries", 1) >= MAX_TRIES:  # type: ignore[misc]
        await redis.delete(key)
    return False


def _retired(imported: Member) -> str:
    return f"已并入会员 {imported.code}"


_LOCK_SQL = "SELECT * FROM member WHERE id = ANY(:ids) AND merchant_id = :merchant ORDER BY id FOR UPDATE"
_HISTORY_SQL = """
SELECT EXISTS (SELECT 1 FROM purchase WHERE member_id = :member)
    OR EXISTS (SELECT 1 FROM mall_order WHERE member_id = :member)
    OR EXISTS (SELECT 1 FROM wallet_account WHERE member_id = :member AND principal_fen + bonus_fen <> 0)
    OR EXISTS (SELECT 1 FROM credit_account
                WHERE member_id = :member AND (balance_fen <> 0 OR limit_fen <> 0))
    AS has_history
"""


async def link(merchant: Merchant, follower: Member, imported: Member, phone: str, *, now: datetime) -> Link:
    """Make the follower (proved `phone`) the imported member; see the module's rule."""
    async with in_transaction():
        rows = await queries.fetch_rows(_LOCK_SQL, ids=[follower.id, imported.id], merchant=merchant.id)
        locked = {row["id"]: queries.as_model(Member, row) for row in rows}
        mine, theirs = locked.get(follower.id), locked.get(imported.id)
        if mine is None or theirs is None:
            return Link(Outcome.NONE)
        if mine.openid is None:  # a duplicate delivery linked it first (or the follower left)
            replay = theirs.openid is not None and mine.blocked_reason == _retired(theirs)
            return Link(Outcome.LINKED, theirs) if replay else Link(Outcome.NONE)
        if theirs.openid is not None:
            return Link(Outcome.TAKEN)
        if (theirs.phone, theirs.source, theirs.anonymized_at) != (phone, MemberSource.IMPORT, None):
            return Link(Outcome.NONE)
        if (await queries.fetch_one(_HISTORY_SQL, member=mine.id))["has_history"]:
            return Link(Outcome.NOT_NEW)
        moved = {
            "openid": mine.openid,
            "openid_digest": mine.openid_digest,
            "subscribed": True,
            "unsubscribed_at": None,
            **({"unionid": mine.unionid} if theirs.unionid is None and mine.unionid else {}),
            **({"mp_openid": mine.mp_openid} if theirs.mp_openid is None and mine.mp_openid else {}),
        }
        await Member.filter(id=mine.id).update(
            openid=None,
            openid_digest=None,
            unionid=None if "unionid" in moved else mine.unionid,
            mp_openid=None if "mp_openid" in moved else mine.mp_openid,
            subscribed=False,
            unsubscribed_at=now,
            blocked_at=now,
            blocked_reason=_retired(theirs),
        )
        await Member.filter(id=theirs.id).update(**moved)
        await audit_log.record(
            merchant.id,
            f"member:{mine.id}",
            "members.linked",
            f"member:{theirs.id}",
            follower_id=mine.id,
            imported_id=theirs.id,
            phone=mask_phone(phone),
        )
    for name, value in moved.items():
        setattr(theirs, name, value)
    return Link(Outcome.LINKED, theirs)
