"""The console in a real browser: log in, the dashboard's chart, a CSRF-less POST refused, logout."""

from __future__ import annotations

from tests.browser.conftest import Browser


def assert_clean(browser: Browser) -> None:
    """No script error and no CSP violation on the pages visited."""
    assert not browser.errors, browser.errors


async def test_log_in_see_the_dashboard_and_log_out(browser: Browser) -> None:
    page = browser.page
    await page.goto(f"{browser.base}/admin/")
    assert page.url.startswith(f"{browser.base}/admin/login")
    await browser.shot("login")
    await browser.login("alice", "wrong-password")
    assert await page.locator('[data-field="password"]').inner_text() == "用户名或密码错误"
    assert await page.input_value('input[name="username"]') == "alice"
    await browser.login()
    assert page.url == f"{browser.base}/admin/"
    await page.wait_for_selector('#trend[data-drawn="1"] canvas')
    assert await page.locator('[data-kpi="liability"]').inner_text() == "0.00"
    await browser.shot("dashboard")
    await page.click("text=退出登录")
    await page.wait_for_url(f"{browser.base}/admin/login")
    await page.goto(f"{browser.base}/admin/")
    assert page.url.startswith(f"{browser.base}/admin/login")
    assert_clean(browser)


async def test_a_post_without_the_csrf_token_is_refused(browser: Browser) -> None:
    page = browser.page
    await browser.login()
    # The browser sends the session cookie (same origin) but no token: refused, and still logged in.
    result = await page.evaluate(
        """async () => {
            const r = await fetch('/admin/logout', {method: 'POST',
                headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: ''});
            return [r.status, await r.text()];
        }"""
    )
    assert result[0] == 403
    assert "安全令牌" in result[1]
    await page.goto(f"{browser.base}/admin/")
    assert page.url == f"{browser.base}/admin/"
    assert_clean(browser)
