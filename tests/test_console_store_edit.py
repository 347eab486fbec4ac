"""The console's page of one store: its name and address edited (the code stays), admins only."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from models.loyalty import AuditLog
from models.merchant import Merchant, Store
from tests.support.console import login, make_staff, page_csrf
from tests.support.factories import make_merchant


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    return merchant


async def test_a_store_is_edited_from_its_filled_form(client: TestClient, shop: Merchant) -> None:
    assert (await login(client, "shop", "alice")).status == 303
    main = await Store.get(merchant_id=shop.id, code="main")
    assert f'href="/admin/stores/{main.id}"' in await (await client.get("/admin/stores")).text()
    page = f"/admin/stores/{main.id}"
    html = await (await client.get(page)).text()
    assert f'name="name" value="{main.name}"' in html
    token = await page_csrf(client, page)
    empty = await client.post(page, data={"csrf_token": token, "name": " ", "address": "人民路 1 号"})
    assert empty.status == 400
    text = await empty.text()
    assert 'data-field="store.name"' in text and 'name="address" value="人民路 1 号"' in text
    assert (await client.post(page, data={"name": "偷改"})).status == 403
    done = await client.post(
        page, data={"csrf_token": token, "name": "人民路店", "address": "人民路 1 号"}, allow_redirects=False
    )
    assert done.status == 303
    await main.refresh_from_db()
    assert (main.code, main.name, main.address) == ("main", "人民路店", "人民路 1 号")
    assert await AuditLog.filter(merchant_id=shop.id, action__startswith="store.").exists()
    assert "门店信息已修改" in await (await client.get(done.headers["Location"])).text()


async def test_managers_cannot_edit_a_store(client: TestClient, shop: Merchant) -> None:
    assert (await login(client, "shop", "mona")).status == 303
    main = await Store.get(merchant_id=shop.id, code="main")
    assert (await client.get(f"/admin/stores/{main.id}")).status == 403
    token = await page_csrf(client, "/admin/stores")
    refused = await client.post(f"/admin/stores/{main.id}", data={"csrf_token": token, "name": "店长改"})
    assert refused.status == 403
    assert (await Store.get(id=main.id)).name == main.name
