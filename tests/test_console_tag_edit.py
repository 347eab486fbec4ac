"""The console's page of one tag: rename it, change an automatic tag's rule, delete it after a
confirmation (refused while a segment uses it)."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient

from handlers.tags import catalogue
from models.loyalty import AuditLog
from models.merchant import Merchant
from models.tag import Tag
from tests.support.console import login, page_csrf, signed_in_shop
from tests.support.factories import EFFECTS

FEMALE = {"type": "gender", "genders": ["female"]}


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await signed_in_shop(client)


@pytest.fixture
async def auto(shop: Merchant) -> Tag:
    return await catalogue.create_tag(shop.id, "女性", FEMALE, actor="test", effects=EFFECTS)


async def test_an_automatic_tags_name_and_rule_are_edited(
    client: TestClient, shop: Merchant, auto: Tag
) -> None:
    assert f'href="/admin/tags/{auto.id}"' in await (await client.get("/admin/tags")).text()
    html = await (await client.get(f"/admin/tags/{auto.id}")).text()
    assert 'name="name" value="女性"' in html and "&#34;female&#34;" in html
    token = await page_csrf(client, f"/admin/tags/{auto.id}")
    url = f"/admin/tags/{auto.id}"
    broken = await client.post(url, data={"csrf_token": token, "name": "女士", "rule": '{"type": '})
    assert broken.status == 400
    text = await broken.text()
    assert 'data-field="rule"' in text and 'name="name" value="女士"' in text
    unknown = await client.post(url, data={"csrf_token": token, "name": "女士", "rule": '{"type": "nope"}'})
    assert unknown.status == 400 and 'data-field="rule"' in await unknown.text()
    await auto.refresh_from_db()
    assert (auto.name, auto.rule_version) == ("女性", 1)
    rule = {"type": "gender", "genders": ["male"]}
    done = await client.post(
        url, data={"csrf_token": token, "name": "男士", "rule": json.dumps(rule)}, allow_redirects=False
    )
    assert done.status == 303, await done.text()
    await auto.refresh_from_db()
    assert (auto.name, auto.rule, auto.rule_version) == ("男士", rule, 2)
    assert await AuditLog.filter(merchant_id=shop.id, action="tag.update").exists()
    assert "标签已修改" in await (await client.get(done.headers["Location"])).text()
    assert (await client.post(url, data={"name": "偷改", "rule": json.dumps(rule)})).status == 403


async def test_a_manual_tag_is_renamed_by_a_manager(client: TestClient, shop: Merchant) -> None:
    manual = await catalogue.create_tag(shop.id, "尝鲜", None, actor="test", effects=EFFECTS)
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "mona")).status == 303
    html = await (await client.get(f"/admin/tags/{manual.id}")).text()
    assert 'name="rule"' not in html and 'id="tag-delete"' not in html  # deleting needs an admin
    token = await page_csrf(client, f"/admin/tags/{manual.id}")
    renamed = await client.post(
        f"/admin/tags/{manual.id}", data={"csrf_token": token, "name": "尝鲜客"}, allow_redirects=False
    )
    assert renamed.status == 303
    assert (await Tag.get(id=manual.id)).name == "尝鲜客"
    gone = await client.post(f"/admin/tags/{manual.id}/delete", data={"csrf_token": token})
    assert gone.status == 403 and await Tag.exists(id=manual.id)


async def test_a_tag_is_deleted_unless_a_segment_uses_it(
    client: TestClient, shop: Merchant, auto: Tag
) -> None:
    page = await (await client.get(f"/admin/tags/{auto.id}")).text()
    assert 'data-confirm="确定删除标签「女性」？"' in page
    token = await page_csrf(client, "/admin/segments")
    segment = {"csrf_token": token, "name": "女性会员", "mode": "and", "advanced": ""}
    segment |= {"c0_field": f"tag:{auto.id}", "c0_op": "has"}
    assert (await client.post("/admin/segments", data=segment, allow_redirects=False)).status == 303
    used = await client.post(f"/admin/tags/{auto.id}/delete", data={"csrf_token": token})
    assert used.status == 400
    assert 'data-field="delete"' in await used.text() and await Tag.exists(id=auto.id)
    other = await catalogue.create_tag(shop.id, "临时", None, actor="test", effects=EFFECTS)
    deleted = await client.post(
        f"/admin/tags/{other.id}/delete", data={"csrf_token": token}, allow_redirects=False
    )
    assert deleted.status == 303 and not await Tag.exists(id=other.id)
    assert "标签已删除" in await (await client.get(deleted.headers["Location"])).text()
