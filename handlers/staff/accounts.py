"""Staff accounts: creation with a hashed password, and the username and password rules every path
(the CLI, the demo seed, the back-office API) applies (login and roles live with the till endpoints)."""

from __future__ import annotations

import asyncio
import re

from argon2 import PasswordHasher
from tortoise.exceptions import IntegrityError

from handlers.core import config_cache, queries
from handlers.core.errors import Conflict, NotFound, ValidationError
from models.merchant import Merchant, Store
from models.staff import Staff, StaffRole

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 256  # what the login endpoint accepts
hasher = PasswordHasher()  # argon2-cffi's defaults: RFC 9106's low-memory profile (t=3, 64 MiB, p=4)


def check_username(username: str) -> None:
    if not USERNAME.match(username):
        raise ValidationError("username 须为 3–64 个字母、数字、'_'、'.' 或 '-'", field="username")


def parse_role(role: str) -> StaffRole:
    try:
        return StaffRole(role)
    except ValueError as exc:
        raise ValidationError(
            "role 须为 cashier（收银员）、manager（店长）或 admin（管理员）", field="role"
        ) from exc


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValidationError(f"password 至少 {MIN_PASSWORD} 个字符", field="password")
    if len(password) > MAX_PASSWORD:
        raise ValidationError(f"password 最多 {MAX_PASSWORD} 个字符", field="password")


async def hash_password(password: str) -> str:
    """argon2 is CPU-bound (tens of milliseconds): keep it off the event loop."""
    return await asyncio.to_thread(hasher.hash, password)


async def staff_account(merchant_id: int, staff_id: int) -> tuple[Staff, Merchant] | None:
    """A staff account and its merchant, from this process's configuration cache when the request
    observed a version (role, store and deactivation changes are announced like any manager's change)."""

    async def load() -> tuple[Staff, Merchant] | None:
        staff = await queries.first(Staff, id=staff_id, merchant_id=merchant_id)
        merchant = await queries.first(Merchant, id=merchant_id) if staff is not None else None
        return (staff, merchant) if staff is not None and merchant is not None else None

    return await config_cache.cached(("staff", merchant_id, staff_id), load)


async def create_staff(
    merchant: Merchant, *, store_code: str | None, username: str, role: str, password: str
) -> Staff:
    check_username(username)
    staff_role = parse_role(role)
    check_password(password)
    store = None
    if store_code:
        store = await Store.get_or_none(merchant=merchant, code=store_code)
        if store is None:
            raise NotFound(f"门店 {store_code!r} 不存在", field="store")
        if store.closed_at is not None:
            raise Conflict(f"门店 {store_code!r} 已停业，不能分配员工", field="store")
    try:
        return await Staff.create(
            merchant=merchant,
            store=store,
            username=username,
            role=staff_role,
            password_hash=hasher.hash(password),
        )
    except IntegrityError as exc:
        raise Conflict(f"员工账号 {username!r} 已存在", field="username") from exc


async def usernames(merchant_id: int, staff_ids: set[int]) -> dict[int, str]:
    """The usernames of these staff ids of the merchant (the audit log names actors `staff:<id>`)."""
    if not staff_ids:
        return {}
    rows = await Staff.filter(merchant_id=merchant_id, id__in=sorted(staff_ids)).values_list("id", "username")
    return {int(staff_id): str(name) for staff_id, name in rows}
