"""Test harness: real PostgreSQL + Redis when MEMBERBOT_TEST_* are set, else SQLite + in-process Redis.

The schema comes from the checked-in migrations (applied once per session), so every run also proves
that the migrations build the schema the models describe. Each test starts from empty tables and an
empty Redis database.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import create_app
from bot.scheduler import SCHEDULER_CONFIG, SchedulerConfig
from bot.settings import Settings
from tests.support import dbutil

pytest_plugins = ["tests.support.wechat_sim"]

PG_URL = os.environ.get("MEMBERBOT_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("MEMBERBOT_TEST_REDIS_URL", "")
SECRET = "test-secret-key-0123456789abcdef0123456789"


def pytest_configure(config: pytest.Config) -> None:
    if PG_URL.startswith("sqlite"):
        raise pytest.UsageError("MEMBERBOT_TEST_DATABASE_URL must be a postgres:// URL")


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Apply the migrations once: to the PostgreSQL test database, or to a SQLite template file."""
    if PG_URL:
        asyncio.run(dbutil.reset_postgres(PG_URL))
        asyncio.run(dbutil.migrate(PG_URL))
        return PG_URL
    path = tmp_path_factory.mktemp("db") / "template.sqlite3"
    asyncio.run(dbutil.migrate(f"sqlite://{path}"))
    return str(path)


@pytest.fixture
def database_url(migrated_template: str, tmp_path: Path) -> Iterator[str]:
    if PG_URL:
        asyncio.run(dbutil.truncate_postgres(PG_URL))
        yield PG_URL
        return
    path = tmp_path / "test.sqlite3"
    shutil.copyfile(migrated_template, path)
    yield f"sqlite://{path}"


@pytest.fixture
def redis_url() -> Iterator[str]:
    if REDIS_URL:
        asyncio.run(dbutil.flush_redis(REDIS_URL))
        yield REDIS_URL
        asyncio.run(dbutil.flush_redis(REDIS_URL))
        return
    yield "memory://"


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url, redis_url=redis_url, secret_key=SECRET,
        wechat_api_base="http://127.0.0.1:9", public_base_url="http://testserver",
    )


@pytest.fixture
def make_app(settings: Settings) -> Any:
    """The app under test. Its embedded scheduler (memory:// only) has no jobs, so a test that happens to
    run at :05 past the hour never sees points maintenance; scheduler tests set their own config."""

    def factory(**overrides: Any) -> web.Application:
        app = create_app(settings.model_copy(update=overrides))
        app[SCHEDULER_CONFIG] = SchedulerConfig(schedule=())
        return app

    return factory


@pytest.fixture
async def client(aiohttp_client: Any, make_app: Any) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(make_app())


postgres_only = pytest.mark.skipif(not PG_URL, reason="needs MEMBERBOT_TEST_DATABASE_URL (PostgreSQL)")
