"""Invite codes over the JSON APIs, against the simulator over real HTTP: the member's invite endpoint,
the mini-program login with a launch scene, and managers' printable staff acquisition codes."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from defusedxml import ElementTree as ET

from handlers.loyalty import config as loyalty_config
from handlers.members import invites
from handlers.staff import stores
from handlers.staff.accounts import create_staff
from models.invite import InviteCode
from models.loyalty import AuditLog
from models.member import Member
from models.merchant import Merchant
from models.points import PointsKind, PointsTransaction
from models.staff import Staff
from tests.support.factories import make_member, make_merchant, staff_headers
from tests.support.qr import encodes
from tests.support.wechat_sim import WeChatSim
from webhooks.appkeys import WECHAT

OA, OA_SECRET, MP, MP_SECRET = "wxshopoa", "shop-oa-secret", "wxshopmp", "shop-mp-secret"
CREATE, WXACODE = "cgi-bin/qrcode/create", "wxa/getwxacodeunlimit"


@pytest.fixture
async def env(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> tuple[Any, Merchant]:
    wechat_sim.add_app(OA, OA_SECRET)
    wechat_sim.add_app(MP, MP_SECRET)
    client = await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))
    return client, await make_merchant()


async def login(client: Any, sim: WeChatSim, openid: str, scene: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": sim.mint_code(MP, openid)}
    if scene is not None:
        body["scene"] = scene
    response = await client.post("/api/mp/shop/login", json=body)
    assert response.status == 200, await response.text()
    return dict(await response.json())


def bearer(session: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['token']}"}


def png_of(data_url: str) -> bytes:
    assert data_url.startswith("data:image/png;base64,")
    return base64.b64decode(data_url.removeprefix("data:image/png;base64,"))


async def test_member_gets_both_codes_once_and_the_stats(env: Any, wechat_sim: WeChatSim) -> None:
    client, shop = env
    session = await login(client, wechat_sim, "o-mp-alice")
    code = session["member"]["code"]
    response = await client.get("/api/mp/shop/invite", headers=bearer(session))
    assert response.status == 200
    body = await response.json()
    official = body["official_account"]
    assert official["scene"] == f"ref_{code}" and official["permanent"] is False
    assert wechat_sim.state.qrcodes[official["ticket"]]["scene"] == f"ref_{code}"
    assert encodes(png_of(official["png"]), official["url"])
    async with client.app[WECHAT].session.get(official["image_url"]) as picture:  # WeChat's showqrcode
        assert picture.status == 200 and picture.content_type == "image/png"
    mini = body["miniprogram"]
    assert (mini["scene"], mini["page"]) == (f"r={code}", "pages/index/index")
    assert png_of(mini["png"]).startswith(b"\x89PNG")
    [made] = wechat_sim.records(WXACODE)
    assert made["body"] == {
        "scene": f"r={code}",
        "page": "pages/index/index",
        "width": 430,
        "env_version": "release",
        "check_path": False,
    }
    assert (body["invited"], body["rewarded"], body["points"]) == (0, 0, 0)
    again = await (await client.get("/api/mp/shop/invite", headers=bearer(session))).json()
    assert (
        again["miniprogram"]["png"] == mini["png"]
        and again["official_account"]["ticket"] == official["ticket"]
    )
    assert len(wechat_sim.records(WXACODE)) == 1 and len(wechat_sim.records(CREATE)) == 1
    assert await InviteCode.filter(merchant_id=shop.id).count() == 2
    assert (await client.get("/api/mp/shop/invite")).status == 401


async def test_without_an_official_account_only_the_mini_program_code(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    wechat_sim.add_app(MP, MP_SECRET)
    client = await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))
    await make_merchant(oa_appid="", oa_secret="")
    session = await login(client, wechat_sim, "o-mp-alice")
    body = await (await client.get("/api/mp/shop/invite", headers=bearer(session))).json()
    assert body["official_account"] is None and body["miniprogram"]["scene"].startswith("r=")
    wechat_sim.inject_error(WXACODE, 45009, times=2)
    await InviteCode.all().delete()
    refused = await client.get("/api/mp/shop/invite", headers=bearer(session))
    assert refused.status == 502 and (await refused.json())["error"]["code"] == "wechat_error"


async def test_login_with_a_scene_records_the_referrer_once(env: Any, wechat_sim: WeChatSim) -> None:
    client, shop = env
    await loyalty_config.save_program(
        shop.id, {"referral": {"trigger": "registration", "level_points": [30]}}, actor="test"
    )
    alice = await login(client, wechat_sim, "o-mp-alice")
    carol = await login(client, wechat_sim, "o-mp-carol")
    bob = await login(client, wechat_sim, "o-mp-bob", scene=f"r={alice['member']['code']}")
    alice_id = (await Member.get(merchant_id=shop.id, mp_openid="o-mp-alice")).id
    bob_row = await Member.get(merchant_id=shop.id, mp_openid="o-mp-bob")
    assert bob_row.referrer_id == alice_id
    # A later login never changes it, whatever scene it brings; nor gives an existing member one.
    await login(client, wechat_sim, "o-mp-bob", scene=f"r={carol['member']['code']}")
    await login(client, wechat_sim, "o-mp-carol", scene=f"r={alice['member']['code']}")
    assert (await Member.get(id=bob_row.id)).referrer_id == alice_id
    assert (await Member.get(merchant_id=shop.id, mp_openid="o-mp-carol")).referrer_id is None
    earned = await PointsTransaction.filter(member_id=alice_id, kind=PointsKind.EARN_REFERRAL)
    assert [t.delta for t in earned] == [30]
    stats = await (await client.get("/api/mp/shop/invite", headers=bearer(alice))).json()
    assert (stats["invited"], stats["rewarded"], stats["points"]) == (1, 1, 30)
    assert bob["member"]["code"] != alice["member"]["code"]


@pytest.mark.parametrize(
    ("scene", "referred"),
    [("r%3D{code}", True), ("ref_{code}", True), ("r={code}x", False), ("r=NOPE2345", False), ("", False)],
)
async def test_login_scenes_follow_the_follow_rules(
    env: Any, wechat_sim: WeChatSim, scene: str, referred: bool
) -> None:
    client, shop = env
    alice = await login(client, wechat_sim, "o-mp-alice")
    await login(client, wechat_sim, "o-mp-bob", scene=scene.format(code=alice["member"]["code"]))
    bob = await Member.get(merchant_id=shop.id, mp_openid="o-mp-bob")
    assert (bob.referrer_id is not None) is referred


async def test_login_scene_of_another_merchants_member_or_a_staff_member(
    env: Any, wechat_sim: WeChatSim
) -> None:
    client, shop = env
    stranger = await make_member(await make_merchant("other"), openid="o-other")
    amy = await create_staff(
        shop, store_code="main", username="amy", role="cashier", password="correct-horse-1"
    )
    await login(client, wechat_sim, "o-mp-bob", scene=f"r={stranger.code}")
    await login(client, wechat_sim, "o-mp-dan", scene=f"staff_{amy.id}")
    bob = await Member.get(merchant_id=shop.id, mp_openid="o-mp-bob")
    dan = await Member.get(merchant_id=shop.id, mp_openid="o-mp-dan")
    assert (bob.referrer_id, bob.acquired_by_id) == (None, None)
    assert (dan.referrer_id, dan.acquired_by_id) == (None, amy.id)
    assert (bob.store_id, dan.store_id) == (None, amy.store_id)  # the acquiring store


async def test_staff_codes_as_png_and_svg_for_managers(env: Any, wechat_sim: WeChatSim) -> None:
    client, shop = env
    manager = await staff_headers(client, shop, "manager")
    amy = await create_staff(
        shop, store_code="main", username="amy", role="cashier", password="correct-horse-1"
    )
    png = await client.get(f"/api/admin/staff/{amy.id}/qr.png", headers=manager)
    assert png.status == 200 and png.content_type == "image/png"
    [made] = wechat_sim.records(CREATE)
    assert made["body"] == {
        "action_name": "QR_LIMIT_STR_SCENE",
        "action_info": {"scene": {"scene_str": f"staff_{amy.id}"}},
    }
    code = await InviteCode.get(merchant_id=shop.id, scene=f"staff_{amy.id}")
    assert code.permanent and code.expires_at is None
    assert encodes(await png.read(), code.url, box=16)
    svg = await client.get(f"/api/admin/staff/{amy.id}/qr.svg", headers=manager)
    assert svg.status == 200 and svg.content_type == "image/svg+xml"
    root = ET.fromstring(await svg.read())
    assert root.tag.endswith("svg") and any(el.tag.endswith("path") for el in root.iter())
    assert len(wechat_sim.records(CREATE)) == 1  # the permanent ticket is cached
    audit = await AuditLog.filter(merchant_id=shop.id, action="invite.staff_qr")
    assert [a.subject for a in audit] == [f"staff:{amy.id}"]
    listed = await (await client.get("/api/openapi.json")).json()
    assert (
        "image/png"
        in listed["paths"]["/api/admin/staff/{staff_id}/qr.png"]["get"]["responses"]["200"]["content"]
    )


async def test_staff_codes_are_scoped_and_need_a_manager(env: Any, wechat_sim: WeChatSim) -> None:
    client, shop = env
    manager = await staff_headers(client, shop, "manager")
    cashier = await staff_headers(client, shop, "cashier")
    other = await make_merchant("other")
    theirs = await create_staff(
        other, store_code="main", username="zoe", role="cashier", password="correct-horse-1"
    )
    gone = await create_staff(
        shop, store_code="main", username="gone", role="cashier", password="correct-horse-1"
    )
    await Staff.filter(id=gone.id).update(active=False)
    for staff_id in (theirs.id, gone.id, 999_999):
        for suffix in ("png", "svg"):
            refused = await client.get(f"/api/admin/staff/{staff_id}/qr.{suffix}", headers=manager)
            assert refused.status == 404 and (await refused.json())["error"]["field"] == "staff_id"
    mine = (await Staff.get(merchant_id=shop.id, username="cashier-user")).id
    forbidden = await client.get(f"/api/admin/staff/{mine}/qr.png", headers=cashier)
    assert forbidden.status == 403
    assert (await client.get(f"/api/admin/staff/{mine}/qr.png")).status == 401
    assert (await client.get("/api/admin/staff/0/qr.png", headers=manager)).status == 404
    assert wechat_sim.records(CREATE) == []


async def test_a_manager_sees_only_their_stores_staff_codes(env: Any, wechat_sim: WeChatSim) -> None:
    client, shop = env
    await stores.create_store(shop.id, "b", stores.StoreInput("B 店"), actor="test")
    bea = await create_staff(shop, store_code="b", username="bea", role="cashier", password="correct-horse-1")
    manager = await staff_headers(client, shop, "manager")
    admin = await staff_headers(client, shop, "admin")
    hidden = await client.get(f"/api/admin/staff/{bea.id}/qr.png", headers=manager)
    assert hidden.status == 404 and wechat_sim.records(CREATE) == []
    shown = await client.get(f"/api/admin/staff/{bea.id}/qr.png", headers=admin)
    assert shown.status == 200 and shown.content_type == "image/png"


async def test_no_staff_code_past_the_permanent_cap(env: Any, wechat_sim: WeChatSim) -> None:
    client, shop = env
    manager = await staff_headers(client, shop, "manager")
    amy = await create_staff(
        shop, store_code="main", username="amy", role="cashier", password="correct-horse-1"
    )
    wechat_sim.state.permanent_qr_limit = 0
    refused = await client.get(f"/api/admin/staff/{amy.id}/qr.png", headers=manager)
    body = await refused.json()
    assert refused.status == 409 and "上限" in body["error"]["message"]
    assert await InviteCode.filter(merchant_id=shop.id).count() == 0
    # Nor when memberbot's own count says so: WeChat is not asked again.
    wechat_sim.state.permanent_qr_limit = invites.PERMANENT_LIMIT
    assert (await client.get(f"/api/admin/staff/{amy.id}/qr.svg", headers=manager)).status == 409
    assert len(wechat_sim.records(CREATE)) == 1


async def test_no_staff_code_without_an_official_account(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client = await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))
    shop = await make_merchant(oa_appid="", oa_secret="")
    manager = await staff_headers(client, shop, "manager")
    mine = (await Staff.get(merchant_id=shop.id, username="manager-user")).id
    refused = await client.get(f"/api/admin/staff/{mine}/qr.svg", headers=manager)
    assert refused.status == 409 and (await refused.json())["error"]["field"] == "oa_appid"
    assert wechat_sim.records() == []


async def test_invite_settings_need_an_admin_to_change(env: Any) -> None:
    client, shop = env
    manager = await staff_headers(client, shop, "manager")
    assert (
        await client.put("/api/admin/invite/settings", json={"permanent": True}, headers=manager)
    ).status == 403
    got = await client.get("/api/admin/invite/settings", headers=manager)
    assert await got.json() == {"permanent": False, "permanent_used": 0, "permanent_limit": 100_000}
    admin = await staff_headers(client, shop, "admin")
    bad = await client.put("/api/admin/invite/settings", json={"permanent": "maybe"}, headers=admin)
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "permanent"
    assert not (await Merchant.get(id=shop.id)).invite_qr_permanent
