from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from handlers.core import config_cache
from handlers.members import lookup as members
from handlers.staff.accounts import create_staff
from handlers.staff.merchants import MerchantInput, create_merchant
from handlers.staff.sessions import SessionKind, SessionStore
from models.merchant import Merchant
from models.staff import Staff
from webhooks.appkeys import REDIS

PASSWORD = "correct-horse-1"


async def start(aiohttp_client: Any, make_app: Any) -> tuple[Any, Merchant]:
    client = await aiohttp_client(make_app())
    merchant = await create_merchant(MerchantInput(slug="shop-a", name="A 店", timezone="Asia/Shanghai"))
    for username, role in (("alice", "admin"), ("mona", "manager"), ("carl", "cashier")):
        await create_staff(merchant, store_code="main", username=username, role=role, password=PASSWORD)
    return client, merchant


async def login(client: Any, username: str, password: str = PASSWORD, merchant: str = "shop-a") -> Any:
    return await client.post(
        "/api/staff/login", json={"merchant": merchant, "username": username, "password": password}
    )


async def token_of(client: Any, username: str) -> dict[str, str]:
    body = await (await login(client, username)).json()
    return {"Authorization": f"Bearer {body['token']}"}


async def test_login_returns_token_and_staff(aiohttp_client: Any, make_app: Any) -> None:
    client, merchant = await start(aiohttp_client, make_app)
    response = await login(client, "carl")
    assert response.status == 200
    body = await response.json()
    assert body["expires_in"] == 12 * 3600
    staff = await Staff.get(merchant_id=merchant.id, username="carl")
    assert body["staff"] == {
        "id": staff.id,
        "username": "carl",
        "role": "cashier",
        "store": {"id": staff.store_id, "code": "main", "name": "总店"},
        "merchant": {"slug": "shop-a", "name": "A 店"},
    }
    me = await client.get("/api/staff/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status == 200
    assert await me.json() == body["staff"]


async def test_wrong_password_unknown_user_and_unknown_merchant_look_alike(
    aiohttp_client: Any, make_app: Any
) -> None:
    client, _ = await start(aiohttp_client, make_app)
    answers = [
        await login(client, "carl", "wrong-password"),
        await login(client, "nobody"),
        await login(client, "carl", merchant="no-such-shop"),
    ]
    assert [a.status for a in answers] == [401, 401, 401]
    errors = [(await a.json())["error"] for a in answers]
    assert errors[0] == errors[1] == errors[2] == {"code": "unauthorized", "message": "用户名或密码错误"}


async def test_five_failures_lock_the_account(aiohttp_client: Any, make_app: Any) -> None:
    client, merchant = await start(aiohttp_client, make_app)
    statuses = [(await login(client, "carl", f"wrong-{i}")).status for i in range(5)]
    assert statuses == [401, 401, 401, 401, 423]
    locked = await login(client, "carl")  # even the right password is refused while locked
    assert locked.status == 423
    error = (await locked.json())["error"]
    assert error["code"] == "account_locked" and "后再试" in error["message"]
    assert 840 <= int(locked.headers["Retry-After"]) <= 900
    staff = await Staff.get(merchant_id=merchant.id, username="carl")
    assert staff.locked_until is not None
    assert timedelta(minutes=14) < staff.locked_until - datetime.now(UTC) <= timedelta(minutes=15)
    assert (await login(client, "alice")).status == 200  # other accounts are unaffected


async def test_lock_expires_and_success_clears_the_count(aiohttp_client: Any, make_app: Any) -> None:
    client, merchant = await start(aiohttp_client, make_app)
    for i in range(5):
        await login(client, "carl", f"wrong-{i}")
    await Staff.filter(merchant_id=merchant.id, username="carl").update(
        locked_until=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert (await login(client, "carl")).status == 200
    staff = await Staff.get(merchant_id=merchant.id, username="carl")
    assert (staff.failed_logins, staff.locked_until) == (0, None)
    for i in range(4):
        assert (await login(client, "carl", f"wrong-{i}")).status == 401
    assert (await login(client, "carl")).status == 200
    assert (await login(client, "carl", "wrong-again")).status == 401  # the count restarted at zero


async def test_concurrent_failures_are_all_counted(aiohttp_client: Any, make_app: Any) -> None:
    client, merchant = await start(aiohttp_client, make_app)
    answers = await asyncio.gather(*(login(client, "carl", f"wrong-{i}") for i in range(5)))
    assert sorted(a.status for a in answers) == [401, 401, 401, 401, 423]
    assert (await Staff.get(merchant_id=merchant.id, username="carl")).locked_until is not None


async def test_logout_revokes_the_token(aiohttp_client: Any, make_app: Any) -> None:
    client, _ = await start(aiohttp_client, make_app)
    headers = await token_of(client, "mona")
    assert (await client.post("/api/staff/logout", headers=headers)).status == 204
    assert (await client.get("/api/staff/me", headers=headers)).status == 401
    assert (await client.post("/api/staff/logout", headers=headers)).status == 401


async def test_roles_are_ordered_cashier_manager_admin(aiohttp_client: Any, make_app: Any) -> None:
    client, _ = await start(aiohttp_client, make_app)
    for username, status in (("carl", 403), ("mona", 403), ("alice", 200)):
        response = await client.get("/api/admin/reply-templates", headers=await token_of(client, username))
        assert response.status == status, username
        if status == 403:
            error = (await response.json())["error"]
            assert error == {"code": "forbidden", "message": "需要管理员及以上权限"}
    assert (await client.get("/api/admin/reply-templates")).status == 401


async def test_role_downgrade_and_deactivation_apply_to_live_tokens(
    aiohttp_client: Any, make_app: Any
) -> None:
    client, merchant = await start(aiohttp_client, make_app)
    headers = await token_of(client, "alice")
    await Staff.filter(merchant_id=merchant.id, username="alice").update(role="cashier")
    await config_cache.announce(client.app[REDIS])  # what every manager's change through the API does
    assert (await client.get("/api/admin/reply-templates", headers=headers)).status == 403
    await Staff.filter(merchant_id=merchant.id, username="alice").update(active=False)
    await config_cache.announce(client.app[REDIS])
    assert (await client.get("/api/staff/me", headers=headers)).status == 401
    assert (await login(client, "alice")).status == 401


async def test_member_and_staff_tokens_are_not_interchangeable(aiohttp_client: Any, make_app: Any) -> None:
    client, merchant = await start(aiohttp_client, make_app)
    member = await members.create_member(merchant, mp_openid="o-mp-1")
    issued = await SessionStore(client.app[REDIS]).issue(SessionKind.MEMBER, merchant.id, member.id)
    member_headers = {"Authorization": f"Bearer {issued.token}"}
    assert (await client.get("/api/staff/me", headers=member_headers)).status == 401
    staff_headers = await token_of(client, "alice")
    assert (await client.get("/api/mp/shop-a/me", headers=staff_headers)).status == 401


async def test_login_body_is_validated(aiohttp_client: Any, make_app: Any) -> None:
    client, _ = await start(aiohttp_client, make_app)
    missing = await client.post("/api/staff/login", json={"merchant": "shop-a", "username": "carl"})
    assert missing.status == 400
    assert (await missing.json())["error"]["field"] == "password"
    huge = await login(client, "carl", "x" * 257)
    assert (await huge.json())["error"]["field"] == "password"
    nul = await login(client, "carl\x00")
    assert (nul.status, (await nul.json())["error"]["field"]) == (400, "username")


async def test_login_is_rate_limited_per_ip_and_username(aiohttp_client: Any, make_app: Any) -> None:
    client, _ = await start(aiohttp_client, make_app)
    statuses = [(await login(client, "ghost", f"wrong-{i}")).status for i in range(21)]
    assert statuses == [401] * 20 + [429]
    assert (await login(client, "alice")).status == 200  # another username is not limited


async def test_revoke_all_ends_every_session_of_an_account(aiohttp_client: Any, make_app: Any) -> None:
    client, merchant = await start(aiohttp_client, make_app)
    first, second = await token_of(client, "mona"), await token_of(client, "mona")
    other = await token_of(client, "alice")
    staff = await Staff.get(merchant_id=merchant.id, username="mona")
    assert await SessionStore(client.app[REDIS]).revoke_all(SessionKind.STAFF, staff.id) == 2
    assert (await client.get("/api/staff/me", headers=first)).status == 401
    assert (await client.get("/api/staff/me", headers=second)).status == 401
    assert (await client.get("/api/staff/me", headers=other)).status == 200


async def test_oversized_body_is_413_envelope(aiohttp_client: Any, make_app: Any) -> None:
    client, _ = await start(aiohttp_client, make_app)
    response = await client.post(
        "/api/staff/login", data=b"{" + b" " * 300_000 + b"}", headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert (await response.json())["error"] == {
        "code": "payload_too_large",
        "message": "请求体过大（不能超过 256 KB）",
    }


async def test_concurrent_guesses_cannot_get_past_the_lockout(aiohttp_client: Any, make_app: Any) -> None:
    client, _ = await start(aiohttp_client, make_app)
    guesses = [f"wrong-{i}" for i in range(15)] + [PASSWORD]
    answers = await asyncio.gather(*(login(client, "carl", guess) for guess in guesses))
    statuses = [a.status for a in answers]
    assert statuses.count(200) + statuses.count(401) <= 5  # at most five passwords were checked
    assert 423 in statuses


def test_the_service_hashes_with_argon2s_recommended_parameters() -> None:
    """The suite hashes cheaply (tests/conftest.py); the service must not: argon2-cffi's defaults."""
    import importlib

    import handlers.staff.accounts as module

    cheap = module.hasher
    try:
        fresh = importlib.reload(module).hasher
    finally:
        module.hasher = cheap
    assert (fresh.time_cost, fresh.memory_cost, fresh.parallelism) == (3, 65536, 4)
