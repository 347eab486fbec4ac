"""Member identity: codes, get-or-create under concurrent deliveries, tenant-scoped lookups.

Every lookup takes the merchant: no query here crosses merchants.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core import queries, tasks
from handlers.core.errors import ErrorCode, NotFound, ValidationError
from models.member import Member
from models.merchant import Merchant

# Crockford-style alphabet without 0/1/I/O: easy to read aloud and to type at the till.
CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
CODE_LENGTH = 8  # 32**8 ≈ 1.1e12 codes: random, not sequential, not guessable
MAX_CODE_ATTEMPTS = 5


def new_member_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(raw: str) -> str:
    return raw.strip().upper().replace("-", "").replace(" ", "")


def openid_digest(secret: bytes, merchant_id: int, openid: str) -> str:
    return hmac.new(secret, f"{merchant_id}:{openid}".encode(), hashlib.sha256).hexdigest()


MEMBER_REGISTERED = "member.registered"
REGISTERED_KEY_PREFIX = "member:"


def registered_key(member_id: int) -> str:
    return f"{REGISTERED_KEY_PREFIX}{member_id}"


async def create_member(merchant: Merchant, **fields: Any) -> Member:
    """Insert a member with a fresh random code, retrying on the (rare) code collision, and queue its
    `member.registered` effect in the same transaction (run after commit by whoever registers it).

    A unique violation on any other key (openid, mp_openid) propagates as IntegrityError.
    """
    for _ in range(MAX_CODE_ATTEMPTS):
        code = new_member_code()
        try:
            async with in_transaction():
                member = await Member.create(merchant=merchant, code=code, **fields)
                await tasks.queue(
                    MEMBER_REGISTERED,
                    registered_key(member.id),
                    {"member_id": member.id},
                    merchant_id=merchant.id,
                    now=datetime.now(UTC),
                    inline=True,
                )
                return member
        except IntegrityError:
            if not await Member.filter(merchant_id=merchant.id, code=code).exists():
                raise
    raise RuntimeError("could not allocate a unique member code")


async def get_or_create(
    merchant: Merchant, lookup: dict[str, Any], defaults: dict[str, Any]
) -> tuple[Member, bool]:
    """Find the member by a unique key, or create it; safe under concurrent duplicate deliveries."""
    member = await Member.get_or_none(merchant_id=merchant.id, **lookup)
    if member is not None:
        return member, False
    try:
        return await create_member(merchant, **lookup, **defaults), True
    except IntegrityError:
        member = await Member.get_or_none(merchant_id=merchant.id, **lookup)
        if member is None:
            raise
        return member, False


async def by_openid(merchant: Merchant, openid: str) -> Member | None:
    """The member behind an Official Account follower (every chat message looks it up)."""
    return await queries.first(Member, merchant_id=merchant.id, openid=openid)


def is_code(code: str) -> bool:
    return len(code) == CODE_LENGTH and all(ch in CODE_ALPHABET for ch in code)


async def resolve(
    merchant: Merchant, *, member_id: int | None = None, code: str | None = None, field: str | None = None
) -> Member:
    """The merchant's member named by id or by member code (a code wins when both are given).

    One rule for every caller: a member of another merchant, an unknown one, and an erased
    (anonymised) one are all 404 `member_not_found`, naming the field that named the member."""
    if code is not None:
        normalised = normalise_code(code)
        found = (
            await queries.first(Member, merchant_id=merchant.id, code=normalised)
            if is_code(normalised)
            else None
        )
        field = field or "member_code"
    elif member_id is not None:
        found = await queries.first(Member, id=member_id, merchant_id=merchant.id)
        field = field or "member_id"
    else:
        raise ValidationError("请提供会员号 member_code 或会员 member_id", field=field or "member_code")
    if found is None or found.anonymized_at is not None:
        raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND, field=field)
    return found
