from __future__ import annotations

import asyncio
import logging
from typing import Any

from handlers.members import lookup as members
from handlers.members import mp_login, registration
from handlers.staff.merchants import MerchantInput, create_merchant
from handlers.staff.sessions import token_digest
from models.member import Gender, Member
from models.merchant import Merchant
from tests.support.factories import EFFECTS, effects_done
from tests.support.wechat_sim import WeChatSim
from webhooks.appkeys import REDIS

APPID, SECRET = "wxmptest00000001", "mp-test-secret"


async def start(aiohttp_client: Any, make_app: Any, sim: WeChatSim) -> tuple[Any, Merchant]:
    sim.add_app(APPID, SECRET)
    client = await aiohttp_client(make_app(wechat_api_base=sim.url))
    merchant = await create_merchant(
        MerchantInput(slug="shop-a", name="A 店", mp_appid=APPID, mp_secret=SECRET)
    )
    return client, merchant


async def login(
    client: Any, sim: WeChatSim, openid: str, unionid: str | None = None, slug: str = "shop-a"
) -> Any:
    code = sim.mint_code(APPID, openid, unionid)
    return await client.post(f"/api/mp/{slug}/login", json={"code": code})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_first_login_creates_member_and_session(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    response = await login(client, wechat_sim, "o-mp-1")
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"token", "expires_in", "member"}
    assert body["expires_in"] == 7 * 24 * 3600
    assert "session_key" not in str(body)
    member = await Member.get(merchant_id=merchant.id, mp_openid="o-mp-1")
    assert body["member"]["code"] == member.code
    assert body["member"]["profile_complete"] is False
    me = await client.get("/api/mp/shop-a/me", headers=bearer(body["token"]))
    assert me.status == 200
    assert (await me.json())["code"] == member.code
    assert wechat_sim.records("sns/jscode2session")[-1]["errcode"] == 0


async def test_session_key_stays_server_side_and_token_is_stored_hashed(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, _ = await start(aiohttp_client, make_app, wechat_sim)
    token = (await (await login(client, wechat_sim, "o-mp-1")).json())["token"]
    redis = client.app[REDIS]
    keys = [bytes(k).decode() for k in await redis.keys("sess:*")]
    assert f"sess:{token_digest(token)}" in keys
    assert not any(token in key for key in keys)
    record = await redis.get(f"sess:{token_digest(token)}")
    assert b"session_key" in record and token.encode() not in record


async def test_same_user_logs_in_again_as_the_same_member(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    first = await (await login(client, wechat_sim, "o-mp-1")).json()
    second = await (await login(client, wechat_sim, "o-mp-1")).json()
    assert first["member"]["code"] == second["member"]["code"]
    assert first["token"] != second["token"]
    assert await Member.filter(merchant_id=merchant.id).count() == 1


async def test_concurrent_first_logins_create_one_member(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    responses = await asyncio.gather(*(login(client, wechat_sim, "o-mp-race") for _ in range(5)))
    codes = {(await r.json())["member"]["code"] for r in responses}
    assert [r.status for r in responses] == [200] * 5
    assert len(codes) == 1
    assert await Member.filter(merchant_id=merchant.id).count() == 1


async def test_unionid_links_the_official_account_member(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    oa_member = await members.create_member(merchant, openid="o-oa-1", unionid="u-1")
    response = await login(client, wechat_sim, "o-mp-1", unionid="u-1")
    assert (await response.json())["member"]["code"] == oa_member.code
    await oa_member.refresh_from_db()
    assert oa_member.mp_openid == "o-mp-1"
    assert await Member.filter(merchant_id=merchant.id).count() == 1


async def test_a_login_and_a_follow_of_one_person_at_the_same_moment_make_one_member(client: Any) -> None:
    """Both lookups miss, both create: the (merchant, unionid) key lets only one member be made, and the
    loser joins it, whichever side that is."""
    merchant = await create_merchant(MerchantInput(slug="shop-u", name="U 店"))
    secret = b"k" * 32
    for n in range(12):
        unionid = f"u-race-{n}"
        follow = registration.subscribe(
            merchant, f"o-oa-r{n}", "", secret=secret, unionid=unionid, effects=EFFECTS
        )
        login = mp_login.link_member(merchant, f"o-mp-r{n}", unionid, effects=EFFECTS)
        pair = (follow, login) if n % 2 else (login, follow)
        await asyncio.gather(*pair)
        person = await Member.filter(merchant_id=merchant.id, unionid=unionid)
        assert len(person) == 1, unionid
        assert (person[0].openid, person[0].mp_openid) == (f"o-oa-r{n}", f"o-mp-r{n}")
    assert await Member.filter(merchant_id=merchant.id).count() == 12


async def test_a_mini_program_member_never_takes_a_unionid_another_member_has(client: Any) -> None:
    merchant = await create_merchant(MerchantInput(slug="shop-v", name="V 店"))
    await members.create_member(merchant, openid="o-oa-9", unionid="u-9")
    lone = await mp_login.link_member(
        merchant, "o-mp-9", None, effects=EFFECTS
    )  # logged in without a unionid first
    again = await mp_login.link_member(
        merchant, "o-mp-9", "u-9", effects=EFFECTS
    )  # now WeChat reports the unionid
    assert again.id == lone.id and again.unionid is None
    assert await Member.filter(merchant_id=merchant.id, unionid="u-9").count() == 1


async def test_a_unionid_already_linked_elsewhere_keeps_the_new_identity_apart(client: Any) -> None:
    """After an account migration the same person can arrive with new openids; their unionid already
    belongs to a member with other openids. They get a member of their own rather than an error."""
    merchant = await create_merchant(MerchantInput(slug="shop-w", name="W 店"))
    old = await members.create_member(merchant, openid="o-oa-old", mp_openid="o-mp-old", unionid="u-w")
    follow = await registration.subscribe(
        merchant, "o-oa-new", "", secret=b"k" * 32, unionid="u-w", effects=EFFECTS
    )
    login = await mp_login.link_member(merchant, "o-mp-new", "u-w", effects=EFFECTS)
    assert follow.created and follow.member.id != old.id and follow.member.unionid is None
    assert login.id not in (old.id, follow.member.id) and login.unionid is None
    assert await Member.filter(merchant_id=merchant.id, unionid="u-w").count() == 1


async def test_unionid_of_another_merchant_is_not_linked(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    other = await create_merchant(MerchantInput(slug="shop-b", name="B 店"))
    foreign = await members.create_member(other, openid="o-oa-b", unionid="u-1")
    assert (await login(client, wechat_sim, "o-mp-1", unionid="u-1")).status == 200
    member = await Member.get(merchant_id=merchant.id, mp_openid="o-mp-1")
    assert member.id != foreign.id and member.unionid == "u-1"
    await foreign.refresh_from_db()
    assert foreign.mp_openid is None


async def test_invalid_or_used_code_is_401(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    bad = await client.post("/api/mp/shop-a/login", json={"code": "never-minted"})
    assert bad.status == 401
    assert (await bad.json())["error"]["code"] == "invalid_login_code"
    code = wechat_sim.mint_code(APPID, "o-mp-1")
    assert (await client.post("/api/mp/shop-a/login", json={"code": code})).status == 200
    reused = await client.post("/api/mp/shop-a/login", json={"code": code})
    assert reused.status == 401
    assert (await reused.json())["error"] == {
        "code": "invalid_login_code",
        "message": "登录凭证无效或已使用，请重新登录",
        "field": "code",
    }
    assert await Member.filter(merchant_id=merchant.id).count() == 1


def _wechat_log(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "webhooks.mp" and hasattr(r, "errcode")]


async def test_a_login_wechat_refuses_shows_chinese_and_logs_the_errcode(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim, caplog: Any
) -> None:
    """WeChat's own errmsg ('invalid appid rid: …') and errcode are for the log, never for the member."""
    client, _ = await start(aiohttp_client, make_app, wechat_sim)
    await create_merchant(
        MerchantInput(slug="shop-x", name="X 店", mp_appid="wxunknown0000001", mp_secret="s")
    )
    with caplog.at_level(logging.WARNING, logger="webhooks.mp"):
        refused = await client.post("/api/mp/shop-x/login", json={"code": "SIMCODE-any"})
    assert refused.status == 502
    assert await refused.json() == {
        "error": {"code": "wechat_error", "message": "本店小程序登录暂不可用，请联系商家"}
    }
    assert wechat_sim.records("sns/jscode2session")[-1]["errcode"] == 40013  # WeChat did refuse it
    text = await refused.text()
    assert not any(leak in text for leak in ("invalid appid", "rid", "40013", "WeChat"))
    (record,) = _wechat_log(caplog)
    assert (record.errcode, record.error) == (40013, "InvalidCredential")
    assert "invalid appid" in record.errmsg and "rid:" in record.errmsg
    caplog.clear()
    wechat_sim.inject_error("sns/jscode2session", 40226, "high risk user rid: 6f1a2b3c")
    with caplog.at_level(logging.WARNING, logger="webhooks.mp"):
        blocked = await login(client, wechat_sim, "o-mp-risky")
    assert blocked.status == 502
    assert (await blocked.json())["error"] == {
        "code": "wechat_error",
        "message": "微信登录暂时失败，请稍后再试",
    }
    assert "high risk" not in await blocked.text() and "6f1a2b3c" not in await blocked.text()
    (record,) = _wechat_log(caplog)
    assert record.errcode == 40226 and "6f1a2b3c" in record.errmsg


async def test_a_login_at_a_merchant_without_a_mini_program_is_chinese(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, _ = await start(aiohttp_client, make_app, wechat_sim)
    await create_merchant(MerchantInput(slug="shop-oa", name="公众号店"))
    response = await client.post("/api/mp/shop-oa/login", json={"code": "x"})
    assert (response.status, (await response.json())["error"]) == (
        502,
        {"code": "wechat_error", "message": "本店小程序登录暂不可用，请联系商家"},
    )
    assert wechat_sim.records("sns/jscode2session") == []


async def test_login_body_and_merchant_are_validated(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, _ = await start(aiohttp_client, make_app, wechat_sim)
    extra = await client.post("/api/mp/shop-a/login", json={"code": "x", "openid": "forged"})
    assert extra.status == 400
    assert (await extra.json())["error"]["field"] == "openid"
    empty = await client.post("/api/mp/shop-a/login", json={"code": ""})
    assert (await empty.json())["error"]["field"] == "code"
    not_json = await client.post("/api/mp/shop-a/login", data=b"code=1")
    assert not_json.status == 400
    unknown = await client.post("/api/mp/nobody/login", json={"code": "x"})
    assert unknown.status == 404
    assert (await unknown.json())["error"]["code"] == "merchant_not_found"
    assert wechat_sim.records("sns/jscode2session") == []


async def test_token_of_another_merchant_is_refused(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, _ = await start(aiohttp_client, make_app, wechat_sim)
    await create_merchant(MerchantInput(slug="shop-b", name="B 店", mp_appid=APPID, mp_secret=SECRET))
    token = (await (await login(client, wechat_sim, "o-mp-1")).json())["token"]
    assert (await client.get("/api/mp/shop-b/me", headers=bearer(token))).status == 401
    patched = await client.patch("/api/mp/shop-b/me", json={"name": "张三"}, headers=bearer(token))
    assert patched.status == 401
    assert (await client.get("/api/mp/shop-a/me")).status == 401
    assert (await client.get("/api/mp/shop-a/me", headers=bearer("forged"))).status == 401


async def test_logout_revokes_the_token(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> None:
    client, _ = await start(aiohttp_client, make_app, wechat_sim)
    token = (await (await login(client, wechat_sim, "o-mp-1")).json())["token"]
    assert (await client.post("/api/mp/shop-a/logout", headers=bearer(token))).status == 204
    response = await client.get("/api/mp/shop-a/me", headers=bearer(token))
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_profile_completion_sets_timestamp_and_runs_hook_once(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    token = (await (await login(client, wechat_sim, "o-mp-1")).json())["token"]
    edit = {"name": " 张三 ", "phone": "+86 138-0013-8000"}
    partial = await client.patch("/api/mp/shop-a/me", json=edit, headers=bearer(token))
    assert partial.status == 200
    body = await partial.json()
    assert (body["name"], body["phone"], body["profile_complete"]) == ("张三", "138****8000", False)
    assert await effects_done(registration.PROFILE_COMPLETED) == []
    full = await client.patch(
        "/api/mp/shop-a/me", json={"birthday": "1990年5月20日", "gender": "女"}, headers=bearer(token)
    )
    body = await full.json()
    assert (body["birthday"], body["gender"], body["profile_complete"]) == ("1990-05-20", "female", True)
    again = await client.patch("/api/mp/shop-a/me", json={"gender": "male"}, headers=bearer(token))
    assert (await again.json())["gender"] == "male"
    member = await Member.get(merchant_id=merchant.id, mp_openid="o-mp-1")
    assert await effects_done(registration.PROFILE_COMPLETED) == [{"member_id": member.id}]
    assert member.profile_completed_at is not None
    assert (member.phone, member.gender) == ("13800138000", Gender.MALE)


async def test_invalid_profile_field_changes_nothing(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    token = (await (await login(client, wechat_sim, "o-mp-1")).json())["token"]
    cases = [
        ({"name": "李四", "phone": "12345"}, "phone"),
        ({"name": "李四", "birthday": "2999-01-01"}, "birthday"),
        ({"name": "李四", "gender": "unknown"}, "gender"),
        ({"name": "<b>"}, "name"),
        ({"nickname": "x"}, "nickname"),
    ]
    for payload, field in cases:
        response = await client.patch("/api/mp/shop-a/me", json=payload, headers=bearer(token))
        assert response.status == 400, payload
        assert (await response.json())["error"]["field"] == field
    member = await Member.get(merchant_id=merchant.id, mp_openid="o-mp-1")
    assert (member.name, member.phone, member.birthday, member.gender) == (None, None, None, None)


async def test_login_is_rate_limited_per_ip(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, _ = await start(aiohttp_client, make_app, wechat_sim)
    statuses = [
        (await client.post("/api/mp/shop-a/login", json={"code": f"bad-{i}"})).status for i in range(31)
    ]
    assert statuses[:30] == [401] * 30
    assert statuses[30] == 429
    limited = await client.post("/api/mp/shop-a/login", json={"code": "bad"})
    assert int(limited.headers["Retry-After"]) > 0


async def test_anonymised_member_does_not_come_back_on_login(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    old = await members.create_member(merchant, mp_openid="o-mp-1", name="旧资料")
    await Member.filter(id=old.id).update(anonymized_at=old.registered_at, name=None)
    body = await (await login(client, wechat_sim, "o-mp-1")).json()
    assert body["member"]["code"] != old.code
    await old.refresh_from_db()
    assert old.mp_openid is None
    assert (await Member.get(merchant_id=merchant.id, mp_openid="o-mp-1")).id != old.id


async def test_a_mini_program_sign_up_gets_the_registration_bonus_once(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    from handlers.loyalty.ledger_audit import audit_points
    from models.points import PointsAccount

    client, merchant = await start(aiohttp_client, make_app, wechat_sim)
    await asyncio.gather(*(login(client, wechat_sim, "o-mp-bonus") for _ in range(3)))
    await login(client, wechat_sim, "o-mp-bonus")
    member = await Member.get(merchant_id=merchant.id, mp_openid="o-mp-bonus")
    assert (await PointsAccount.get(member_id=member.id)).balance == 100  # the default registration bonus
    assert await audit_points() == []


async def test_following_after_the_mini_program_login_is_the_same_member(
    aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim
) -> None:
    from datetime import UTC, datetime

    from handlers.core.chat import IncomingMessage
    from handlers.loyalty.ledger_audit import audit_points
    from models.points import PointsAccount
    from webhooks.appkeys import DISPATCHER

    oa_appid, oa_secret = "wxoatest00000001", "oa-test-secret"
    wechat_sim.add_app(APPID, SECRET)
    wechat_sim.add_app(oa_appid, oa_secret)
    client = await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))
    merchant = await create_merchant(
        MerchantInput(
            slug="shop-a",
            name="A 店",
            mp_appid=APPID,
            mp_secret=SECRET,
            oa_appid=oa_appid,
            oa_secret=oa_secret,
        )
    )
    assert (await login(client, wechat_sim, "o-mp-7", unionid="u-7")).status == 200
    wechat_sim.add_follower(oa_appid, "o-oa-7", unionid="u-7")
    follow = IncomingMessage(openid="o-oa-7", kind="event", created_at=datetime.now(UTC), event="subscribe")
    await client.app[DISPATCHER].dispatch(merchant, follow)
    member = await Member.get(merchant_id=merchant.id, mp_openid="o-mp-7")
    assert member.openid == "o-oa-7" and await Member.filter(merchant_id=merchant.id).count() == 1
    assert (await PointsAccount.get(member_id=member.id)).balance == 100  # one registration bonus
    wechat_sim.add_follower(oa_appid, "o-oa-8")  # an account without an Open Platform binding
    other = IncomingMessage(openid="o-oa-8", kind="event", created_at=datetime.now(UTC), event="subscribe")
    await client.app[DISPATCHER].dispatch(merchant, other)
    assert await Member.filter(merchant_id=merchant.id).count() == 2
    assert await audit_points() == []
