"""A merchant's stores: create, edit, close and reopen, each audit-logged.

A store's code is fixed once created (promotions and coupons name stores by code). Closing keeps the
store and all its history; it is refused while active staff still belong to it (move or deactivate
them first) and for the merchant's last open store, so a closed store's staff can record nothing new
and every till activity always has an open store. Staff are never assigned to a closed store. The
store row is locked by every change that reads its state (close, reopen, assigning staff to it), so
these checks hold under concurrency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import Conflict, NotFound, ValidationError
from handlers.staff.scope import Scope
from models.merchant import Store
from models.staff import Staff

CODE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MAX_NAME = 128
MAX_ADDRESS = 255


@dataclass(frozen=True, slots=True)
class StoreInput:
    name: str
    address: str = ""


def _validate(data: StoreInput) -> None:
    if not data.name.strip() or len(data.name) > MAX_NAME:
        raise ValidationError(f"name 须为 1–{MAX_NAME} 个字符", field="name")
    if len(data.address) > MAX_ADDRESS:
        raise ValidationError(f"address 最多 {MAX_ADDRESS} 个字符", field="address")


async def create_store(merchant_id: int, code: str, data: StoreInput, *, actor: str) -> Store:
    if not CODE.match(code):
        raise ValidationError("code 须为 1–32 个字母、数字、'_' 或 '-'", field="code")
    _validate(data)
    try:
        async with in_transaction():
            store = await Store.create(
                merchant_id=merchant_id, code=code, name=data.name.strip(), address=data.address.strip()
            )
            await audit_log.record(
                merchant_id, actor, "store.create", f"store:{store.id}", code=code, name=store.name
            )
    except IntegrityError as exc:
        raise Conflict(f"门店编码 {code!r} 已存在", field="code") from exc
    return store


async def list_stores(scope: Scope) -> list[Store]:
    query = Store.filter(merchant_id=scope.merchant_id)
    if scope.store_id is not None:
        query = query.filter(id=scope.store_id)
    return await query.order_by("id")


async def get_store(scope: Scope, store_id: int) -> Store:
    store = await Store.get_or_none(id=store_id, merchant_id=scope.merchant_id)
    if store is None or not scope.allows(store.id):
        raise NotFound("门店不存在", field="store_id")
    return store


async def lock_open_store(merchant_id: int, store_id: int, *, field: str = "store_id") -> Store:
    """The store, locked in the current transaction; NotFound if it is not the merchant's, Conflict if
    it is closed (no staff may join a closed store)."""
    store = await Store.select_for_update().get_or_none(id=store_id, merchant_id=merchant_id)
    if store is None:
        raise NotFound("门店不存在", field=field)
    if store.closed_at is not None:
        raise Conflict(f"门店 {store.name} 已停业，不能分配员工", field=field)
    return store


async def update_store(merchant_id: int, store_id: int, data: StoreInput, *, actor: str) -> Store:
    _validate(data)
    async with in_transaction():
        store = await Store.select_for_update().get_or_none(id=store_id, merchant_id=merchant_id)
        if store is None:
            raise NotFound("门店不存在", field="store_id")
        before = {"name": store.name, "address": store.address}
        store.name, store.address = data.name.strip(), data.address.strip()
        await store.save(update_fields=["name", "address"])
        await audit_log.record(
            merchant_id,
            actor,
            "store.update",
            f"store:{store.id}",
            before=before,
            after={"name": store.name, "address": store.address},
        )
    return store


async def close_store(merchant_id: int, store_id: int, *, actor: str, now: datetime) -> Store:
    async with in_transaction():
        # Every store of the merchant, locked in id order: two closes at once cannot both pass the
        # last-open-store check.
        stores = await Store.filter(merchant_id=merchant_id).order_by("id").select_for_update()
        store = next((s for s in stores if s.id == store_id), None)
        if store is None:
            raise NotFound("门店不存在", field="store_id")
        if store.closed_at is not None:
            return store
        staff = await Staff.filter(store_id=store.id, active=True).count()
        if staff:
            raise Conflict(f"门店还有 {staff} 名在职员工，请先调走或停用后再关闭", field="store_id")
        if not any(s.closed_at is None and s.id != store.id for s in stores):
            raise Conflict("这是最后一家营业中的门店，不能关闭", field="store_id")
        store.closed_at = now
        await store.save(update_fields=["closed_at"])
        await audit_log.record(merchant_id, actor, "store.close", f"store:{store.id}", code=store.code)
    return store


async def reopen_store(merchant_id: int, store_id: int, *, actor: str) -> Store:
    async with in_transaction():
        store = await Store.select_for_update().get_or_none(id=store_id, merchant_id=merchant_id)
        if store is None:
            raise NotFound("门店不存在", field="store_id")
        if store.closed_at is None:
            return store
        store.closed_at = None
        await store.save(update_fields=["closed_at"])
        await audit_log.record(merchant_id, actor, "store.reopen", f"store:{store.id}", code=store.code)
    return store
