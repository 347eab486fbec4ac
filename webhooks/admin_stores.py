"""Admin JSON API of stores: list and read (managers: their own store only), create, edit, close and
reopen (admins). Every change is audit-logged; a closed store keeps its history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field

from handlers.staff import stores
from handlers.staff.scope import scope_of
from models.merchant import Store
from webhooks.api import Call, In, IntId, Line, Out, Routes
from webhooks.auth import ADMIN, MANAGER

routes = Routes("admin_stores")


class StorePath(In):
    store_id: IntId


class StoreFieldsIn(In):
    name: Annotated[Line, Field(min_length=1, max_length=stores.MAX_NAME)]
    address: Annotated[Line, Field(max_length=stores.MAX_ADDRESS)] = ""

    def to_input(self) -> stores.StoreInput:
        return stores.StoreInput(name=self.name, address=self.address)


class StoreCreateIn(StoreFieldsIn):
    code: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9_-]{1,32}$", description="fixed once created; promotions and coupons use it"
        ),
    ]


class AdminStoreOut(Out):
    id: int
    code: str
    name: str
    address: str
    closed_at: datetime | None = Field(description="null while the store is open")
    created_at: datetime


class AdminStoresOut(Out):
    items: list[AdminStoreOut]


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


def store_out(store: Store) -> AdminStoreOut:
    return AdminStoreOut(**{name: getattr(store, name) for name in AdminStoreOut.model_fields})


@routes.get("/api/admin/stores", response=AdminStoresOut, auth=MANAGER)
async def list_stores(call: Call[None, None]) -> AdminStoresOut:
    """The merchant's stores, open and closed, by id (a manager sees their own store only)."""
    return AdminStoresOut(items=[store_out(s) for s in await stores.list_stores(scope_of(call.staff))])


@routes.post(
    "/api/admin/stores", body=StoreCreateIn, response=AdminStoreOut, status=201, auth=ADMIN, errors=(409,)
)
async def create_store(call: Call[StoreCreateIn, None]) -> AdminStoreOut:
    """Open a new store; its code is unique within the merchant (409 when taken)."""
    store = await stores.create_store(
        call.merchant.id, call.body.code, call.body.to_input(), actor=_actor(call)
    )
    return store_out(store)


@routes.get("/api/admin/stores/{store_id}", path_model=StorePath, response=AdminStoreOut, auth=MANAGER)
async def get_store(call: Call[None, StorePath]) -> AdminStoreOut:
    """One store (404 for a manager asking about another store)."""
    return store_out(await stores.get_store(scope_of(call.staff), call.path.store_id))


@routes.put(
    "/api/admin/stores/{store_id}",
    path_model=StorePath,
    body=StoreFieldsIn,
    response=AdminStoreOut,
    auth=ADMIN,
)
async def put_store(call: Call[StoreFieldsIn, StorePath]) -> AdminStoreOut:
    """Replace a store's name and address (its code stays)."""
    store = await stores.update_store(
        call.merchant.id, call.path.store_id, call.body.to_input(), actor=_actor(call)
    )
    return store_out(store)


@routes.post(
    "/api/admin/stores/{store_id}/close",
    path_model=StorePath,
    response=AdminStoreOut,
    auth=ADMIN,
    errors=(409,),
)
async def close_store(call: Call[None, StorePath]) -> AdminStoreOut:
    """Close a store: 409 while active staff belong to it, or for the last open store."""
    store = await stores.close_store(
        call.merchant.id, call.path.store_id, actor=_actor(call), now=datetime.now(UTC)
    )
    return store_out(store)


@routes.post("/api/admin/stores/{store_id}/reopen", path_model=StorePath, response=AdminStoreOut, auth=ADMIN)
async def reopen_store(call: Call[None, StorePath]) -> AdminStoreOut:
    """Reopen a closed store."""
    return store_out(await stores.reopen_store(call.merchant.id, call.path.store_id, actor=_actor(call)))
