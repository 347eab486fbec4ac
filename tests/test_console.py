"""The console's foundation over HTTP: login with the API's lockout, the session cookie, CSRF on every
POST, the security headers, logout, and the vendored static files."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from handlers.staff.sessions import SessionKind, SessionStore
from models.merchant import Merchant
from models.staff import Staff
from tests.support.console import PASSWORD, csrf_of, login, make_staff, page_csrf
from tests.support.factories import make_merchant
from webhooks.appkeys import REDIS
from webhooks.console import STATIC

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    await make_staff(merchant, "carl", "cashier")
    return merchant


async def test_a_page_without_a_session_goes_to_the_login_page(client: TestClient, shop: Merchant) -> None:
    response = await client.get("/admin/?x=1", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/admin/login?next=%2Fadmin%2F%3Fx%3D1"
    assert (await client.get("/admin", allow_redirects=False)).headers["Location"] == "/admin/"


async def test_login_sets_a_strict_httponly_cookie_and_opens_the_dashboard(
    client: TestClient, shop: Merchant
) -> None:
    response = await login(client, "shop", "alice")
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == "/admin/"
    cookie = response.cookies["mb_console"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/admin"
    assert not cookie["secure"]  # plain http here; behind https see the next test
    dashboard = await client.get("/admin/")
    assert dashboard.status == 200
    html = await dashboard.text()
    assert "概览" in html and "alice（管理员）" in html and "积分负债" in html


async def test_the_cookie_is_secure_behind_an_https_proxy(client: TestClient, shop: Merchant) -> None:
    page = await client.get("/admin/login", headers={"X-Forwarded-Proto": "https"})
    pre = page.cookies["mb_console_pre"]
    assert pre["secure"] is True
    token = csrf_of(await page.text())
    response = await client.post(  # a Secure cookie is not sent over plain http: the proxy's https here
        "/admin/login",
        data={"csrf_token": token, "merchant": "shop", "username": "mona", "password": PASSWORD},
        headers={"X-Forwarded-Proto": "https", "Cookie": f"mb_console_pre={pre.value}"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.cookies["mb_console"]["secure"] is True


async def test_every_console_answer_carries_the_security_headers(client: TestClient, shop: Merchant) -> None:
    for path in ("/admin/login", "/admin/static/console.js"):
        response = await client.get(path)
        assert response.status == 200
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
    html = await (await client.get("/admin/login")).text()
    # No inline script: every <script> has a src under the console's own static files.
    scripts = re.findall(r"<script([^>]*)>", html)
    assert scripts and all('src="/admin/static/' in attrs for attrs in scripts)


async def test_wrong_password_keeps_what_was_typed_and_says_so_next_to_the_field(
    client: TestClient, shop: Merchant
) -> None:
    response = await login(client, "shop", "alice", "wrong-password")
    assert response.status == 401
    html = await response.text()
    assert 'data-field="password">用户名或密码错误' in html
    assert 'name="merchant" value="shop"' in html and 'name="username" value="alice"' in html


async def test_the_api_lockout_applies_to_the_console(client: TestClient, shop: Merchant) -> None:
    statuses = [(await login(client, "shop", "mona", "nope-nope")).status for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 423]
    locked = await login(client, "shop", "mona")  # the right password, while locked
    assert locked.status == 423
    assert "账号已锁定" in await locked.text()
    # The same account is locked for the JSON API too: one lockout per account.
    api = await client.post(
        "/api/staff/login", json={"merchant": "shop", "username": "mona", "password": PASSWORD}
    )
    assert api.status == 423


async def test_cashiers_cannot_log_in_to_the_console(client: TestClient, shop: Merchant) -> None:
    response = await login(client, "shop", "carl")
    assert response.status == 403
    assert "收银员账号不能登录管理后台" in await response.text()
    assert "mb_console" not in response.cookies


async def test_a_login_post_without_its_token_is_refused(client: TestClient, shop: Merchant) -> None:
    await client.get("/admin/login")
    response = await client.post(
        "/admin/login", data={"merchant": "shop", "username": "alice", "password": PASSWORD}
    )
    assert response.status == 403
    assert "CSRF" in await response.text()


async def test_a_post_without_the_session_token_is_refused(client: TestClient, shop: Merchant) -> None:
    assert (await login(client, "shop", "alice")).status == 303
    token = await page_csrf(client)
    refused = await client.post("/admin/logout", data={}, allow_redirects=False)
    assert refused.status == 403
    assert "安全令牌" in await refused.text()
    forged = await client.post("/admin/logout", data={"csrf_token": "0" * 64}, allow_redirects=False)
    assert forged.status == 403
    assert (await client.get("/admin/", allow_redirects=False)).status == 200  # still logged in
    done = await client.post("/admin/logout", data={"csrf_token": token}, allow_redirects=False)
    assert done.status == 303


async def test_logout_ends_the_session(client: TestClient, shop: Merchant) -> None:
    response = await login(client, "shop", "alice")
    session_token = response.cookies["mb_console"].value
    token = await page_csrf(client)
    out = await client.post("/admin/logout", data={"csrf_token": token}, allow_redirects=False)
    assert out.headers["Location"] == "/admin/login"
    assert await SessionStore(client.app[REDIS]).resolve(session_token) is None
    client.session.cookie_jar.update_cookies({"mb_console": session_token})  # replaying the old cookie
    assert (await client.get("/admin/", allow_redirects=False)).status == 303


async def test_deactivation_ends_the_console_session(client: TestClient, shop: Merchant) -> None:
    assert (await login(client, "shop", "mona")).status == 303
    staff = await Staff.get(username="mona")
    await SessionStore(client.app[REDIS]).revoke_all(SessionKind.STAFF, staff.id)
    assert (await client.get("/admin/", allow_redirects=False)).status == 303


async def test_a_password_reset_ends_the_console_session(client: TestClient, shop: Merchant) -> None:
    assert (await login(client, "shop", "mona")).status == 303
    await Staff.filter(username="mona").update(session_epoch=5)  # what a reset does besides revoking
    assert (await client.get("/admin/", allow_redirects=False)).status == 303


async def test_login_goes_back_only_to_a_console_page(client: TestClient, shop: Merchant) -> None:
    page = await client.get("/admin/login?next=https://evil.example/")
    assert 'name="next" value="/admin/"' in await page.text()


def _vendored() -> list[tuple[str, str]]:
    table = (STATIC / "vendor" / "VENDORED.md").read_text()
    return re.findall(r"\| `([\w.-]+\.js)` \|.*\| `([0-9a-f]{64})` \|", table)


def test_the_vendored_files_match_their_recorded_sha256() -> None:
    files = _vendored()
    assert {name for name, _ in files} == {"htmx-2.0.7.min.js", "echarts-5.6.0.min.js"}
    for name, digest in files:
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest, name
    base = (ROOT / "templates" / "admin" / "base.html").read_text()
    assert "htmx-2.0.7.min.js" in base


def test_no_template_has_inline_script_or_a_cdn() -> None:
    for path in (ROOT / "templates" / "admin").glob("*.html"):
        html = path.read_text()
        for attrs in re.findall(r"<script([^>]*)>", html):
            assert 'src="/admin/static/' in attrs, f"{path.name}: inline or foreign script"
        assert not re.search(r"<[^>]*\son[a-z]+\s*=", html), f"{path.name}: an inline event handler"
        assert "http://" not in html and "https://" not in html, path.name


ADMIN_PAGES = (
    "/admin/",
    "/admin/members",
    "/admin/members/import",
    "/admin/programme",
    "/admin/programme/rules",
    "/admin/programme/settings",
    "/admin/programme/notices",
    "/admin/programme/menu",
    "/admin/programme/replies",
    "/admin/segments",
    "/admin/tags",
    "/admin/campaigns",
    "/admin/analytics",
    "/admin/credit",
    "/admin/coupons",
    "/admin/mall",
    "/admin/cards",
    "/admin/products",
    "/admin/stores",
    "/admin/audit",
)
MANAGER_PAGES = (
    "/admin/",
    "/admin/members",
    "/admin/segments",
    "/admin/campaigns",
    "/admin/analytics",
    "/admin/tags",
    "/admin/credit",
    "/admin/programme/menu",
    "/admin/coupons",
    "/admin/mall",
    "/admin/cards",
    "/admin/products",
    "/admin/stores",
    "/admin/audit",
)


async def test_every_page_renders_for_an_admin(client: TestClient, shop: Merchant) -> None:
    assert (await login(client, "shop", "alice")).status == 303
    for path in ADMIN_PAGES:
        response = await client.get(path)
        assert response.status == 200, (path, await response.text())
        assert "<h1>" in await response.text()


async def test_managers_see_their_pages_and_are_refused_admin_ones(
    client: TestClient, shop: Merchant
) -> None:
    assert (await login(client, "shop", "mona")).status == 303
    for path in MANAGER_PAGES:
        assert (await client.get(path)).status == 200, path
    for path in set(ADMIN_PAGES) - set(MANAGER_PAGES):
        response = await client.get(path)
        assert response.status == 403, path
        assert "需要管理员权限" in await response.text()


async def test_an_unknown_console_address_is_an_html_404(client: TestClient, shop: Merchant) -> None:
    anonymous = await client.get("/admin/no-such-page")
    assert anonymous.status == 404 and anonymous.content_type == "text/html"
    assert "没有这个页面" in await anonymous.text()
    assert (await login(client, "shop", "alice")).status == 303
    known = await client.get("/admin/members/12345678")
    assert known.status == 404 and "会员不存在" in await known.text()
    assert (await client.get("/admin/static/console.js")).status == 200
    assert (await client.get("/api/admin/no-such")).content_type == "application/json"
