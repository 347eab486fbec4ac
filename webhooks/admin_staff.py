"""Admin JSON API of staff accounts (`handlers.staff.roster` says who may do what).

Managers list their own store's staff and create, deactivate, reactivate and reset the passwords of its
cashiers; admins do all of it for every account but their own, and also change roles and stores and
lift lockouts. A password travels only in a request body and is never logged or audit-logged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from handlers.staff import accounts, roster
from handlers.staff.scope import scope_of
from models.staff import Staff, StaffRole
from webhooks.api import Call, In, IntId, Line, Out, Routes
from webhooks.auth import ADMIN, MANAGER, session_store

routes = Routes("admin_staff")
Password = Annotated[
    Line,
    Field(
        min_length=accounts.MIN_PASSWORD,
        max_length=accounts.MAX_PASSWORD,
        description="the new password; sent only in the body, never logged",
    ),
]


class StaffPath(In):
    staff_id: IntId


class StaffQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    store_id: IntId | None = None
    role: StaffRole | None = None
    active: bool | None = None
    cursor: IntId | None = None
    limit: Annotated[int, Field(ge=1, le=roster.MAX_PAGE)] = 50


class StaffCreateIn(In):
    username: Annotated[str, Field(pattern=accounts.USERNAME.pattern)]
    password: Password
    role: StaffRole = StaffRole.CASHIER
    store_id: IntId | None = Field(
        default=None, description="required for cashiers and managers; a manager's own store by default"
    )


class StaffChangeIn(In):
    role: StaffRole | None = None
    store_id: IntId | None = Field(default=None, description="null: no store (admins only)")

    @model_validator(mode="after")
    def _something(self) -> StaffChangeIn:
        if not self.model_fields_set:
            raise ValueError("role 和 store_id 至少填写一个")
        if "role" in self.model_fields_set and self.role is None:
            raise ValueError("role 不能为 null")
        return self


class PasswordIn(In):
    password: Password


class StaffAccountOut(Out):
    id: int
    username: str
    role: StaffRole
    store_id: int | None
    active: bool
    locked_until: datetime | None = Field(description="set while a lockout after wrong passwords is in force")
    created_at: datetime


class StaffListOut(Out):
    items: list[StaffAccountOut]
    next_cursor: int | None = Field(description="pass as ?cursor= for the next page; null at the end")


def staff_account_out(staff: Staff, now: datetime) -> StaffAccountOut:
    locked = staff.locked_until if staff.locked_until is not None and staff.locked_until > now else None
    return StaffAccountOut(
        id=staff.id,
        username=staff.username,
        role=StaffRole(staff.role),
        store_id=staff.store_id,
        active=staff.active,
        locked_until=locked,
        created_at=staff.created_at,
    )


@routes.get("/api/admin/staff", response=StaffListOut, auth=MANAGER, errors=(400,))
async def list_staff(call: Call[None, None]) -> StaffListOut:
    """Staff accounts by id (?store_id=&role=&active=&cursor=&limit=1..100); a manager sees their store's."""
    query = StaffQuery.model_validate(dict(call.request.query))
    page, cursor = await roster.list_staff(
        scope_of(call.staff),
        store_id=query.store_id,
        role=query.role,
        active=query.active,
        cursor=query.cursor,
        limit=query.limit,
    )
    now = datetime.now(UTC)
    return StaffListOut(items=[staff_account_out(s, now) for s in page], next_cursor=cursor)


@routes.post(
    "/api/admin/staff",
    body=StaffCreateIn,
    response=StaffAccountOut,
    status=201,
    auth=MANAGER,
    errors=(404, 409),
)
async def create_staff(call: Call[StaffCreateIn, None]) -> StaffAccountOut:
    """Create a staff account (a manager: a cashier of their own store); 409 when the username is taken."""
    body = call.body
    staff = await roster.create(
        call.staff, roster.NewStaff(body.username, body.password, body.role.value, body.store_id)
    )
    return staff_account_out(staff, datetime.now(UTC))


@routes.get("/api/admin/staff/{staff_id}", path_model=StaffPath, response=StaffAccountOut, auth=MANAGER)
async def get_staff(call: Call[None, StaffPath]) -> StaffAccountOut:
    """One staff account (404 outside a manager's store)."""
    return staff_account_out(
        await roster.get_staff(scope_of(call.staff), call.path.staff_id), datetime.now(UTC)
    )


@routes.patch(
    "/api/admin/staff/{staff_id}",
    path_model=StaffPath,
    body=StaffChangeIn,
    response=StaffAccountOut,
    auth=ADMIN,
    errors=(409,),
)
async def change_staff(call: Call[StaffChangeIn, StaffPath]) -> StaffAccountOut:
    """Change another account's role or store (the store must be open)."""
    body = call.body
    staff = await roster.change(
        call.staff,
        call.path.staff_id,
        role=body.role.value if body.role is not None else None,
        store_id=body.store_id,
        store_given="store_id" in body.model_fields_set,
    )
    return staff_account_out(staff, datetime.now(UTC))


@routes.post(
    "/api/admin/staff/{staff_id}/deactivate", path_model=StaffPath, response=StaffAccountOut, auth=MANAGER
)
async def deactivate_staff(call: Call[None, StaffPath]) -> StaffAccountOut:
    """Deactivate an account: it cannot log in and its sessions end at once."""
    staff = await roster.deactivate(call.staff, call.path.staff_id, sessions=session_store(call.request))
    return staff_account_out(staff, datetime.now(UTC))


@routes.post(
    "/api/admin/staff/{staff_id}/reactivate",
    path_model=StaffPath,
    response=StaffAccountOut,
    auth=MANAGER,
    errors=(409,),
)
async def reactivate_staff(call: Call[None, StaffPath]) -> StaffAccountOut:
    """Reactivate an account (409 if its store has closed: move it first)."""
    staff = await roster.reactivate(call.staff, call.path.staff_id)
    return staff_account_out(staff, datetime.now(UTC))


@routes.post(
    "/api/admin/staff/{staff_id}/password",
    path_model=StaffPath,
    body=PasswordIn,
    response=StaffAccountOut,
    auth=MANAGER,
)
async def reset_password(call: Call[PasswordIn, StaffPath]) -> StaffAccountOut:
    """Set a new password for another account; its sessions end at once."""
    staff = await roster.reset_password(
        call.staff, call.path.staff_id, call.body.password, sessions=session_store(call.request)
    )
    return staff_account_out(staff, datetime.now(UTC))


@routes.post("/api/admin/staff/{staff_id}/unlock", path_model=StaffPath, response=StaffAccountOut, auth=ADMIN)
async def unlock_staff(call: Call[None, StaffPath]) -> StaffAccountOut:
    """Lift a lockout after repeated wrong passwords: the account may log in at once."""
    now = datetime.now(UTC)
    return staff_account_out(await roster.unlock(call.staff, call.path.staff_id, now=now), now)
