"""Which stores' data a staff account may see, and which store its till activity belongs to.

An admin sees every store of its merchant; a manager (or cashier) only their own store, and nothing
store-bound at all without one. Every back-office endpoint with store-bound data applies the caller's
`Scope` the same way:

    scope = scope_of(call.staff)                   # Forbidden for a manager without a store
    store_id = scope.store_filter(query.store_id)  # None: every store (admins only)
    rows = await Purchase.filter(merchant_id=scope.merchant_id, **scope.filters())
    sql, params = scope.where("p.store_id")        # hand-written SQL: "TRUE" / "p.store_id = :scope_store"
    scope.require(row.store_id)                    # one row: NotFound outside the scope

Rows with no store (activity before stores were recorded, staff without a store) are visible to
admins only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handlers.core import queries
from handlers.core.errors import Forbidden, NotFound
from models.staff import Staff, StaffRole

SCOPE_PARAM = "scope_store"


@dataclass(frozen=True, slots=True)
class Scope:
    merchant_id: int
    store_id: int | None  # None: every store of the merchant (an admin)

    @property
    def all_stores(self) -> bool:
        return self.store_id is None

    def allows(self, store_id: int | None) -> bool:
        return self.store_id is None or store_id == self.store_id

    def require(
        self, store_id: int | None, message: str = "记录不存在或不属于本门店", field: str | None = None
    ) -> None:
        """Refuse a row outside the scope as if it did not exist (404): no probing of other stores."""
        if not self.allows(store_id):
            raise NotFound(message, field=field)

    def store_filter(self, requested: int | None, field: str = "store_id") -> int | None:
        """The store a listing is limited to: the requested one (None: every store) for an admin; a
        manager's own store, whether they name it or not — naming another store is Forbidden (403)."""
        if self.store_id is None:
            return requested
        if requested is not None and requested != self.store_id:
            raise Forbidden("只能查看本门店的数据", field=field)
        return self.store_id

    def filters(self, column: str = "store_id") -> dict[str, Any]:
        """Keyword filters for a tortoise query: none for an admin, `{column: store}` otherwise."""
        return {} if self.store_id is None else {column: self.store_id}

    def where(self, column: str) -> tuple[str, dict[str, Any]]:
        """A condition for hand-written SQL (`handlers.core.queries`) and its parameters."""
        if self.store_id is None:
            return "TRUE", {}
        return f"{column} = :{SCOPE_PARAM}", {SCOPE_PARAM: self.store_id}


def scope_of(staff: Staff) -> Scope:
    if StaffRole(staff.role) is StaffRole.ADMIN:
        return Scope(staff.merchant_id, None)
    if staff.store_id is None:
        raise Forbidden("账号未分配门店，只有管理员可以查看全部门店的数据")
    return Scope(staff.merchant_id, staff.store_id)


_DEFAULT_STORE_SQL = """
SELECT id FROM store WHERE merchant_id = :merchant AND closed_at IS NULL ORDER BY id LIMIT 1
"""


async def activity_store_id(staff: Staff | None, merchant_id: int) -> int | None:
    """The store a till activity (purchase, pick-up, top-up) is recorded at: the acting staff's store,
    else (an admin without one, or no staff) the merchant's first open store."""
    if staff is not None and staff.store_id is not None:
        return staff.store_id
    rows = await queries.fetch_rows(_DEFAULT_STORE_SQL, merchant=merchant_id)
    return int(rows[0]["id"]) if rows else None
