"""Staff login: argon2 password check, lockout after repeated failures, and the role order.

Five consecutive wrong passwords lock the account for fifteen minutes (`Staff.failed_logins`,
`Staff.locked_until`, updated under a row lock so concurrent attempts count exactly). While locked, no
password is checked and nothing is counted. A successful login clears the counter. An unknown merchant,
unknown username or deactivated account costs one argon2 verification too, so response times do not tell
which usernames exist.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from datetime import datetime, timedelta

from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from tortoise.transactions import in_transaction

from handlers.core.errors import DomainError, ErrorCode, Unauthorized
from handlers.staff import accounts
from models.merchant import Merchant, Store
from models.staff import Staff, StaffRole

LOCK_AFTER_FAILURES = 5
LOCK_DURATION = timedelta(minutes=15)
ROLE_RANK = {StaffRole.CASHIER: 1, StaffRole.MANAGER: 2, StaffRole.ADMIN: 3}
BAD_CREDENTIALS = "用户名或密码错误"


class AccountLocked(DomainError):
    code = ErrorCode.LOCKED

    def __init__(self, until: datetime) -> None:
        super().__init__("连续多次密码错误，账号已暂时锁定，请稍后再试")
        self.until = until


def has_role(role: StaffRole | str, minimum: StaffRole) -> bool:
    try:
        return ROLE_RANK[StaffRole(role)] >= ROLE_RANK[minimum]
    except ValueError:
        return False


@functools.cache
def _dummy_hash() -> str:
    return accounts.hasher.hash(secrets.token_urlsafe(16))


def _check(password_hash: str, password: str) -> bool:
    try:
        return accounts.hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def _verify(password_hash: str, password: str) -> bool:
    """argon2 is CPU-bound (tens of milliseconds): keep it off the event loop."""
    return await asyncio.to_thread(_check, password_hash, password)


async def authenticate(merchant_slug: str, username: str, password: str, *, now: datetime) -> Staff:
    """The staff account these credentials open, or `Unauthorized` / `AccountLocked`."""
    merchant = await Merchant.get_or_none(slug=merchant_slug)
    staff = None
    if merchant is not None:
        staff = await Staff.get_or_none(merchant_id=merchant.id, username=username)
    if staff is None or not staff.active:
        await _verify(await asyncio.to_thread(_dummy_hash), password)
        raise Unauthorized(BAD_CREDENTIALS)
    # Each attempt is counted as a failure BEFORE the password is checked (under the row lock), so
    # concurrent guesses cannot all be checked: at most LOCK_AFTER_FAILURES per lock period are.
    refused, locks_at = await _reserve_attempt(staff, now)
    if refused is not None:
        raise AccountLocked(refused)
    if await _verify(staff.password_hash, password):
        await _succeeded(staff, password)
        return staff
    if locks_at is not None:  # this failure was the last one allowed
        raise AccountLocked(locks_at)
    raise Unauthorized(BAD_CREDENTIALS)


async def _succeeded(staff: Staff, password: str) -> None:
    """The right password: the attempt counted in advance, and any earlier failures, are forgiven."""
    values: dict[str, object] = {"failed_logins": 0, "locked_until": None}
    if accounts.hasher.check_needs_rehash(staff.password_hash):
        values["password_hash"] = await asyncio.to_thread(accounts.hasher.hash, password)
    if values:
        await Staff.filter(id=staff.id).update(**values)
        for name, value in values.items():
            setattr(staff, name, value)


async def _reserve_attempt(staff: Staff, now: datetime) -> tuple[datetime | None, datetime | None]:
    """Count this attempt as a failure in advance. Returns (refused until, locks until): the first is
    set when an earlier attempt locked the account (this one is refused without checking the
    password); the second when this attempt is the last one allowed (a failure then locks)."""
    async with in_transaction():
        row = await Staff.filter(id=staff.id).select_for_update().first()
        if row is None:
            return None, None
        if row.locked_until is not None and row.locked_until > now:
            return row.locked_until, None
        failures = row.failed_logins + 1
        if failures >= LOCK_AFTER_FAILURES:
            until = now + LOCK_DURATION
            await Staff.filter(id=staff.id).update(failed_logins=0, locked_until=until)
            return None, until
        await Staff.filter(id=staff.id).update(failed_logins=failures)
    return None, None


async def staff_store(staff: Staff) -> Store | None:
    if staff.store_id is None:
        return None
    return await Store.get_or_none(id=staff.store_id, merchant_id=staff.merchant_id)
