from __future__ import annotations

from pathlib import Path
from typing import Any

from handlers.core.templating import Renderer
from handlers.staff.accounts import create_staff
from handlers.staff.merchants import MerchantInput, create_merchant
from models.merchant import Merchant, ReplyTemplate
from webhooks.appkeys import RENDERER

PASSWORD = "admin-password-1"


def templates(root: Path) -> Path:
    (root / "replies").mkdir(parents=True)
    (root / "replies" / "welcome.txt.j2").write_text("欢迎 {{ nickname }}！")
    (root / "replies" / "checkin_done.txt.j2").write_text("签到成功，连续 {{ days }} 天")
    return root


async def start(aiohttp_client: Any, make_app: Any, tmp_path: Path) -> tuple[Any, Merchant, dict[str, str]]:
    app = make_app()
    samples = {"welcome": {"nickname": "张三"}, "checkin_done": {"days": 3}}
    app[RENDERER] = Renderer(templates(tmp_path / "templates"), samples=samples)
    client = await aiohttp_client(app)
    merchant = await create_merchant(MerchantInput(slug="shop-a", name="A 店"))
    await create_staff(merchant, store_code=None, username="alice", role="admin", password=PASSWORD)
    body = await (
        await client.post(
            "/api/staff/login", json={"merchant": "shop-a", "username": "alice", "password": PASSWORD}
        )
    ).json()
    return client, merchant, {"Authorization": f"Bearer {body['token']}"}


async def test_list_shows_defaults_and_overrides(aiohttp_client: Any, make_app: Any, tmp_path: Path) -> None:
    client, merchant, headers = await start(aiohttp_client, make_app, tmp_path)
    await ReplyTemplate.create(merchant=merchant, name="welcome", source="你好 {{ nickname }}")
    response = await client.get("/api/admin/reply-templates", headers=headers)
    assert response.status == 200
    listed = {t["name"]: t for t in (await response.json())["templates"]}
    assert set(listed) == {"welcome", "checkin_done"}
    assert listed["welcome"]["default_source"] == "欢迎 {{ nickname }}！"
    assert listed["welcome"]["override"] == "你好 {{ nickname }}"
    assert (listed["checkin_done"]["override"], listed["checkin_done"]["updated_at"]) == (None, None)


async def test_put_takes_effect_at_once_in_this_process(
    aiohttp_client: Any, make_app: Any, tmp_path: Path
) -> None:
    client, merchant, headers = await start(aiohttp_client, make_app, tmp_path)
    renderer = client.app[RENDERER]
    assert await renderer.reply(merchant.id, "welcome", nickname="张三") == "欢迎 张三！"  # now cached
    response = await client.put(
        "/api/admin/reply-templates/welcome", json={"source": "{{ nickname }}，您好"}, headers=headers
    )
    assert response.status == 200
    body = await response.json()
    assert (body["override"], body["default_source"]) == ("{{ nickname }}，您好", "欢迎 {{ nickname }}！")
    assert body["updated_at"] is not None
    assert await renderer.reply(merchant.id, "welcome", nickname="张三") == "张三，您好"
    again = await client.put(
        "/api/admin/reply-templates/welcome", json={"source": "嗨 {{ nickname }}"}, headers=headers
    )
    assert again.status == 200
    assert await ReplyTemplate.filter(merchant_id=merchant.id).count() == 1
    assert await renderer.reply(merchant.id, "welcome", nickname="张三") == "嗨 张三"


async def test_delete_restores_the_default(aiohttp_client: Any, make_app: Any, tmp_path: Path) -> None:
    client, merchant, headers = await start(aiohttp_client, make_app, tmp_path)
    await client.put("/api/admin/reply-templates/welcome", json={"source": "自定义"}, headers=headers)
    assert await client.app[RENDERER].reply(merchant.id, "welcome", nickname="x") == "自定义"
    response = await client.delete("/api/admin/reply-templates/welcome", headers=headers)
    assert response.status == 200
    assert (await response.json())["override"] is None
    assert await ReplyTemplate.filter(merchant_id=merchant.id).count() == 0
    assert await client.app[RENDERER].reply(merchant.id, "welcome", nickname="x") == "欢迎 x！"


async def test_bad_sources_are_refused_with_the_reason(
    aiohttp_client: Any, make_app: Any, tmp_path: Path
) -> None:
    client, merchant, headers = await start(aiohttp_client, make_app, tmp_path)
    broken = await client.put(
        "/api/admin/reply-templates/welcome", json={"source": "{% if %}"}, headers=headers
    )
    assert broken.status == 400
    error = (await broken.json())["error"]
    assert error["field"] == "source" and error["message"].startswith("模板无法解析")
    for source in ("{{ range(10000000) | list }}", "{{ 1 // 0 }}"):  # fail only when rendered
        failing = await client.put(
            "/api/admin/reply-templates/welcome", json={"source": source}, headers=headers
        )
        assert (failing.status, (await failing.json())["error"]["field"]) == (400, "source"), source
    too_long = await client.put(
        "/api/admin/reply-templates/welcome", json={"source": "x" * 4001}, headers=headers
    )
    assert (too_long.status, (await too_long.json())["error"]["field"]) == (400, "source")
    extra = await client.put(
        "/api/admin/reply-templates/welcome", json={"source": "x", "name": "y"}, headers=headers
    )
    assert extra.status == 400
    assert await ReplyTemplate.filter(merchant_id=merchant.id).count() == 0


async def test_unknown_template_is_404(aiohttp_client: Any, make_app: Any, tmp_path: Path) -> None:
    client, merchant, headers = await start(aiohttp_client, make_app, tmp_path)
    put = await client.put("/api/admin/reply-templates/nope", json={"source": "x"}, headers=headers)
    assert put.status == 404
    assert (await put.json())["error"]["field"] == "name"
    assert (await client.delete("/api/admin/reply-templates/nope", headers=headers)).status == 404
    assert (await client.delete("/api/admin/reply-templates/..%2Fx", headers=headers)).status == 404
    assert await ReplyTemplate.filter(merchant_id=merchant.id).count() == 0


async def test_overrides_stay_within_the_admins_merchant(
    aiohttp_client: Any, make_app: Any, tmp_path: Path
) -> None:
    client, merchant, headers = await start(aiohttp_client, make_app, tmp_path)
    other = await create_merchant(MerchantInput(slug="shop-b", name="B 店"))
    await ReplyTemplate.create(merchant=other, name="welcome", source="B 店的欢迎语")
    listed = await (await client.get("/api/admin/reply-templates", headers=headers)).json()
    assert all(t["override"] is None for t in listed["templates"])
    await client.delete("/api/admin/reply-templates/welcome", headers=headers)
    assert await ReplyTemplate.filter(merchant_id=other.id).count() == 1
    await client.put("/api/admin/reply-templates/welcome", json={"source": "A"}, headers=headers)
    assert (await ReplyTemplate.get(merchant_id=other.id, name="welcome")).source == "B 店的欢迎语"
    assert (await ReplyTemplate.get(merchant_id=merchant.id, name="welcome")).source == "A"
