"""The back office's staff management: list, create, change role or store, deactivate, reactivate,
reset a password, unlock — each audit-logged, never with the password.

Rights: an admin manages every account of its merchant but its own (so an admin cannot demote,
deactivate or lock itself out, and the merchant always keeps the acting admin). A manager sees the
staff of its own store and manages only that store's cashiers: creates them there, deactivates,
reactivates and resets their passwords; roles and stores are changed, and lockouts lifted, by admins.
An account outside the caller's view is "not found" (404); one in view but not theirs to manage, 403.

Cashiers and managers always belong to an open store; admins may have none (merchant-wide).
Deactivation and a password reset end the account's sessions at once: its `session_epoch` is raised
in the same transaction (the auth check refuses older sessions, even one a racing login issued) and
its sessions are revoked in the session store right after commit. The lockout stays per account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import Conflict, Forbidden, NotFound, ValidationError
from handlers.staff import accounts, stores
from handlers.staff.scope import Scope, scope_of
from handlers.staff.sessions import SessionKind, SessionStore
from models.staff import Staff, StaffRole

MAX_PAGE = 100
NOT_FOUND = "员工账号不存在"
MANAGER_ONLY_CASHIERS = "店长只能管理本门店的收银员"


@dataclass(frozen=True, slots=True)
class NewStaff:
    username: str
    password: str
    role: str
    store_id: int | None = None


def _actor(staff: Staff) -> str:
    return f"staff:{staff.id}"


def is_admin(staff: Staff) -> bool:
    return StaffRole(staff.role) is StaffRole.ADMIN


def needs_store(role: StaffRole) -> bool:
    return role is not StaffRole.ADMIN


async def list_staff(
    scope: Scope,
    *,
    store_id: int | None,
    role: StaffRole | None,
    active: bool | None,
    cursor: int | None,
    limit: int,
) -> tuple[list[Staff], int | None]:
    """One page in id order and the cursor of the next (None at the end)."""
    query = Staff.filter(merchant_id=scope.merchant_id)
    if (store := scope.store_filter(store_id)) is not None:
        query = query.filter(store_id=store)
    if role is not None:
        query = query.filter(role=role)
    if active is not None:
        query = query.filter(active=active)
    if cursor is not None:
        query = query.filter(id__gt=cursor)
    rows = await query.order_by("id").limit(limit + 1)
    return rows[:limit], rows[limit - 1].id if len(rows) > limit else None


async def get_staff(scope: Scope, staff_id: int) -> Staff:
    staff = await Staff.get_or_none(id=staff_id, merchant_id=scope.merchant_id)
    if staff is None or not scope.allows(staff.store_id):
        raise NotFound(NOT_FOUND, field="staff_id")
    return staff


def _check_may_manage(actor: Staff, target: Staff) -> None:
    """Refuse unless `actor` may act on `target` (both read under the caller's locks)."""
    if not actor.active:
        raise Forbidden("账号已停用")
    if not scope_of(actor).allows(target.store_id):
        raise NotFound(NOT_FOUND, field="staff_id")
    if actor.id == target.id:
        raise Forbidden("不能对自己的账号执行此操作，请联系其他管理员", field="staff_id")
    if is_admin(actor):
        return
    if StaffRole(actor.role) is not StaffRole.MANAGER or StaffRole(target.role) is not StaffRole.CASHIER:
        raise Forbidden(MANAGER_ONLY_CASHIERS, field="staff_id")


async def _lock_pair(actor: Staff, target_id: int) -> tuple[Staff, Staff]:
    """The acting and the target account, locked in id order, re-read: a concurrent change to either
    (a deactivated actor, a moved target) is seen before anything is decided."""
    rows = {
        row.id: row
        for row in await Staff.filter(merchant_id=actor.merchant_id, id__in=[actor.id, target_id])
        .order_by("id")
        .select_for_update()
    }
    if target_id not in rows:
        raise NotFound(NOT_FOUND, field="staff_id")
    if actor.id not in rows:
        raise Forbidden("账号已停用")
    fresh_actor, target = rows[actor.id], rows[target_id]
    _check_may_manage(fresh_actor, target)
    return fresh_actor, target


async def create(actor: Staff, data: NewStaff) -> Staff:
    accounts.check_username(data.username)
    role = accounts.parse_role(data.role)
    accounts.check_password(data.password)
    store_id = data.store_id
    if not is_admin(actor):
        if role is not StaffRole.CASHIER:
            raise Forbidden("店长只能创建收银员账号", field="role")
        store_id = scope_of(actor).store_filter(store_id, field="store_id")
    if store_id is None and needs_store(role):
        raise ValidationError("收银员和店长须指定门店 store_id", field="store_id")
    password_hash = await accounts.hash_password(data.password)
    try:
        async with in_transaction():
            if store_id is not None:
                await stores.lock_open_store(actor.merchant_id, store_id)
            staff = await Staff.create(
                merchant_id=actor.merchant_id,
                store_id=store_id,
                username=data.username,
                role=role,
                password_hash=password_hash,
            )
            await audit_log.record(
                actor.merchant_id,
                _actor(actor),
                "staff.create",
                f"staff:{staff.id}",
                username=staff.username,
                role=role.value,
                store_id=store_id,
            )
    except IntegrityError as exc:
        raise Conflict(f"员工账号 {data.username!r} 已存在", field="username") from exc
    return staff


async def change(
    actor: Staff, target_id: int, *, role: str | None, store_id: int | None, store_given: bool
) -> Staff:
    """Change the role and/or the store (`store_given`: the store was named, None meaning no store)
    of another account; admins only. The new store must be open; a cashier or manager keeps one."""
    if not is_admin(actor):
        raise Forbidden("只有管理员可以调整员工的角色或门店")
    new_role = accounts.parse_role(role) if role is not None else None
    async with in_transaction():
        _, target = await _lock_pair(actor, target_id)
        before = {"role": StaffRole(target.role).value, "store_id": target.store_id}
        final_role = new_role or StaffRole(target.role)
        final_store = store_id if store_given else target.store_id
        if final_store is None and needs_store(final_role):
            raise ValidationError("收银员和店长须指定门店 store_id", field="store_id")
        if store_given and final_store is not None and final_store != target.store_id:
            await stores.lock_open_store(actor.merchant_id, final_store)
        target.role, target.store_id = final_role, final_store
        await target.save(update_fields=["role", "store_id"])
        after = {"role": final_role.value, "store_id": final_store}
        if after != before:
            await audit_log.record(
                actor.merchant_id,
                _actor(actor),
                "staff.update",
                f"staff:{target.id}",
                before=before,
                after=after,
            )
    return target


async def deactivate(actor: Staff, target_id: int, *, sessions: SessionStore) -> Staff:
    async with in_transaction():
        _, target = await _lock_pair(actor, target_id)
        if target.active:
            target.active = False
            target.session_epoch += 1
            await target.save(update_fields=["active", "session_epoch"])
            await audit_log.record(actor.merchant_id, _actor(actor), "staff.deactivate", f"staff:{target.id}")
    await sessions.revoke_all(SessionKind.STAFF, target.id)
    return target


async def reactivate(actor: Staff, target_id: int) -> Staff:
    async with in_transaction():
        _, target = await _lock_pair(actor, target_id)
        if not target.active:
            if target.store_id is not None:
                await stores.lock_open_store(actor.merchant_id, target.store_id)
            target.active = True
            await target.save(update_fields=["active"])
            await audit_log.record(actor.merchant_id, _actor(actor), "staff.reactivate", f"staff:{target.id}")
    return target


async def reset_password(actor: Staff, target_id: int, password: str, *, sessions: SessionStore) -> Staff:
    """Set a new password (the same rules as at creation); the account's sessions end. A lockout in
    force stays: lifting it is `unlock`, an admin's decision."""
    accounts.check_password(password)
    password_hash = await accounts.hash_password(password)
    async with in_transaction():
        _, target = await _lock_pair(actor, target_id)
        target.password_hash = password_hash
        target.session_epoch += 1
        await target.save(update_fields=["password_hash", "session_epoch"])
        await audit_log.record(actor.merchant_id, _actor(actor), "staff.password_reset", f"staff:{target.id}")
    await sessions.revoke_all(SessionKind.STAFF, target.id)
    return target


async def unlock(actor: Staff, target_id: int, *, now: datetime) -> Staff:
    """Lift a lockout after repeated wrong passwords (admins only): the account may log in at once."""
    if not is_admin(actor):
        raise Forbidden("只有管理员可以解除账号锁定")
    async with in_transaction():
        target = await Staff.select_for_update().get_or_none(id=target_id, merchant_id=actor.merchant_id)
        if target is None:
            raise NotFound(NOT_FOUND, field="staff_id")
        locked = (
            target.locked_until if target.locked_until is not None and target.locked_until > now else None
        )
        if locked is not None or target.failed_logins:
            await audit_log.record(
                actor.merchant_id,
                _actor(actor),
                "staff.unlock",
                f"staff:{target.id}",
                locked_until=locked.isoformat() if locked is not None else None,
                failed_logins=target.failed_logins,
            )
            target.failed_logins, target.locked_until = 0, None
            await target.save(update_fields=["failed_logins", "locked_until"])
    return target
