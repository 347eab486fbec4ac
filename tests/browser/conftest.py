"""Browser tests of the console: Playwright (Python) driving Debian's chromium against the app started
in-process on a free port (pytest-aiohttp's `aiohttp_server`) over the test database.

Chromium is looked for at `CHROMIUM` (env), `/usr/bin/chromium`, then `/usr/bin/chromium-browser`;
without one the tests are skipped, saying so. Each page's screenshot is kept under var/screenshots/.
CSP violations and script errors fail the test (`page_errors`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from models.merchant import Merchant
from tests.support.console import PASSWORD, make_staff
from tests.support.factories import make_merchant
from tests.support.wechat_sim import WeChatSim

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM", ""), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


CHROMIUM = chromium_path()
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip this folder's tests, saying why, where no chromium can be found (a `pytestmark` in a
    conftest would be ignored: pytest reads it from test modules only)."""
    if CHROMIUM is not None:
        return
    skip = pytest.mark.skip(reason="no chromium found (apt-get install chromium, or set CHROMIUM=/path)")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@dataclass
class Browser:
    base: str
    page: Any
    errors: list[str] = field(default_factory=list)

    async def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    async def login(self, username: str = "alice", password: str = PASSWORD, merchant: str = "shop") -> None:
        await self.page.goto(f"{self.base}/admin/login")
        await self.page.fill('input[name="merchant"]', merchant)
        await self.page.fill('input[name="username"]', username)
        await self.page.fill('input[name="password"]', password)
        await self.page.click('button[type="submit"]')
        await self.page.wait_for_load_state("load")


def _counts(message: Any) -> bool:
    """A console error that is a fault of the page: a script error or a CSP refusal ("Refused to …"),
    not an HTTP error status a test provokes on purpose (the browser logs those too)."""
    return bool(message.type == "error" and not message.text.startswith("Failed to load resource"))


@pytest.fixture
async def shop(make_app: Any, aiohttp_server: Any) -> AsyncIterator[tuple[str, Merchant]]:
    """The app serving on a free port, a merchant `shop` with admin alice and manager mona. Redis is the
    in-process one, as under `make run`: background work (an import) runs in this process."""
    server = await aiohttp_server(make_app(redis_url="memory://"))
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    yield f"http://127.0.0.1:{server.port}", merchant


@dataclass
class SimulatedShop:
    """The app under test with its WeChat API at the simulator (`wechat_sim`), and the merchant's
    Official Account and mini-program registered there."""

    base: str
    merchant: Merchant
    app: Any
    sim: WeChatSim


@pytest.fixture
async def simulated_shop(make_app: Any, aiohttp_server: Any, wechat_sim: WeChatSim) -> SimulatedShop:
    """Like `shop`, but WeChat is the simulator: messages are really sent (over HTTP, in-process), and
    quiet hours are off so a send never waits for the morning. A test module uses it as its `shop` by
    overriding that fixture (`browser` then drives this app)."""
    server = await aiohttp_server(make_app(redis_url="memory://", wechat_api_base=wechat_sim.url))
    merchant = await make_merchant()
    wechat_sim.add_app(merchant.oa_appid, merchant.oa_secret)
    wechat_sim.add_app(merchant.mp_appid, merchant.mp_secret)
    await Merchant.filter(id=merchant.id).update(quiet_start_minute=0, quiet_end_minute=0)
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    merchant = await Merchant.get(id=merchant.id)
    return SimulatedShop(f"http://127.0.0.1:{server.port}", merchant, server.app, wechat_sim)


@pytest.fixture
async def browser(shop: tuple[str, Merchant], request: pytest.FixtureRequest) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    width = getattr(request, "param", 1280)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        context = await chromium.new_context(
            viewport={"width": width, "height": 900}, locale="zh-CN", accept_downloads=True
        )
        page = await context.new_page()
        page.set_default_timeout(15_000)
        driver = Browser(base=shop[0], page=page)
        page.on("pageerror", lambda exc: driver.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: driver.errors.append(f"console: {msg.text}") if _counts(msg) else None,
        )
        try:
            yield driver
        finally:
            await context.close()
            await chromium.close()
