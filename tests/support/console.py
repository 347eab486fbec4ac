"""Helpers for the console's HTTP tests: log in through the login form, read CSRF tokens from pages."""

from __future__ import annotations

import re
from typing import Any

from handlers.staff.accounts import create_staff
from models.merchant import Merchant
from tests.support.factories import make_merchant

PASSWORD = "correct-horse-1"
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


async def make_staff(merchant: Merchant, username: str, role: str, store: str | None = "main") -> None:
    await create_staff(merchant, store_code=store, username=username, role=role, password=PASSWORD)


async def login(client: Any, merchant: str, username: str, password: str = PASSWORD) -> Any:
    """GET the login page (its pre-login cookie and token), then POST the form; redirects not followed."""
    page = await client.get("/admin/login")
    assert page.status == 200
    token = csrf_of(await page.text())
    return await client.post(
        "/admin/login",
        data={"csrf_token": token, "merchant": merchant, "username": username, "password": password},
        allow_redirects=False,
    )


async def page_csrf(client: Any, path: str = "/admin/") -> str:
    """The session-bound CSRF token, read from a console page."""
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return csrf_of(await response.text())


async def signed_in_shop(client: Any) -> Merchant:
    """The merchant `shop` with an admin (alice, every store) and a manager (mona, store main), the
    console signed in as alice."""
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    assert (await login(client, "shop", "alice")).status == 303
    return merchant
