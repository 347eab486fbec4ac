"""Staff accounts: creation with a hashed password (login and roles live with the till endpoints)."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from tortoise.exceptions import IntegrityError

from handlers.core.errors import Conflict, NotFound, ValidationError
from models.merchant import Merchant, Store
from models.staff import Staff, StaffRole

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
MIN_PASSWORD = 8
hasher = PasswordHasher()  # argon2-cffi's defaults: RFC 9106's low-memory profile (t=3, 64 MiB, p=4)


async def create_staff(
    merchant: Merchant, *, store_code: str | None, username: str, role: str, password: str
) -> Staff:
    if not USERNAME.match(username):
        raise ValidationError("username: 3–64 letters, digits, '_', '.' or '-'", field="username")
    try:
        staff_role = StaffRole(role)
    except ValueError as exc:
        raise ValidationError("role: cashier, manager or admin", field="role") from exc
    if len(password) < MIN_PASSWORD:
        raise ValidationError(f"password: at least {MIN_PASSWORD} characters", field="password")
    store = None
    if store_code:
        store = await Store.get_or_none(merchant=merchant, code=store_code)
        if store is None:
            raise NotFound(f"no store {store_code!r}", field="store")
    try:
        return await Staff.create(
            merchant=merchant,
            store=store,
            username=username,
            role=staff_role,
            password_hash=hasher.hash(password),
        )
    except IntegrityError as exc:
        raise Conflict(f"staff {username!r} already exists", field="username") from exc
