"""Small factories for rows tests need (the ORM must be initialised: create the app client first)."""

from __future__ import annotations

from typing import Any

from handlers import effects
from handlers.members import lookup as members
from handlers.staff.merchants import MerchantInput, create_merchant
from models.member import Member
from models.merchant import Merchant

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
# The durable effects registry, built as the app and the worker build it (no prompt dispatch: a queued
# task that is not inline waits for `run_due`).
EFFECTS = effects.build()


async def effects_done(kind: str) -> list[dict[str, Any]]:
    """The payloads of the `kind` effects that ran to completion, oldest first."""
    from models.task import Task, TaskStatus

    rows = await Task.filter(kind=kind, status=TaskStatus.DONE).order_by("id")
    return [row.payload for row in rows]


async def make_merchant(slug: str = "shop", **overrides: Any) -> Merchant:
    fields: dict[str, Any] = {
        "slug": slug,
        "name": f"{slug} 门店",
        "oa_appid": f"wx{slug}oa",
        "oa_secret": f"{slug}-oa-secret",
        "oa_token": "testtoken",
        "oa_aes_key": AES_KEY,
        "mp_appid": f"wx{slug}mp",
        "mp_secret": f"{slug}-mp-secret",
    }
    fields.update(overrides)
    return await create_merchant(MerchantInput(**fields))


async def make_member(merchant: Merchant, openid: str = "o-member-1", **fields: Any) -> Member:
    return await members.create_member(merchant, openid=openid, subscribed=True, **fields)


async def staff_headers(
    client: Any, merchant: Merchant, role: str = "cashier", username: str = ""
) -> dict[str, str]:
    """Create a staff account of `role` and log it in over HTTP; returns the Authorization header."""
    from handlers.staff.accounts import create_staff

    name = username or f"{role}-user"
    await create_staff(merchant, store_code="main", username=name, role=role, password="correct-horse-1")
    response = await client.post(
        "/api/staff/login", json={"merchant": merchant.slug, "username": name, "password": "correct-horse-1"}
    )
    assert response.status == 200, await response.text()
    return {"Authorization": f"Bearer {(await response.json())['token']}"}
