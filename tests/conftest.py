"""Test harness: always PostgreSQL. MEMBERBOT_TEST_DATABASE_URL names one (CI: the machine's PostgreSQL
15); without it, the session starts an embedded PostgreSQL 18 of its own in a temporary directory.
Redis is MEMBERBOT_TEST_REDIS_URL (a db number the tests flush), else in-process (memory://).

The schema comes from the checked-in migrations (applied once per session), so every run also proves
that the migrations build the schema the models describe, on 15 and on 18. Each test starts from
empty tables and an empty Redis database.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

from bot.app import create_app
from bot.embedded_pg import EmbeddedPostgres
from bot.settings import Settings
from handlers.core.schedule import SchedulerConfig
from handlers.staff import accounts
from tests.support import dbutil
from webhooks.appkeys import SCHEDULER_CONFIG

pytest_plugins = ["tests.support.wechat_sim"]

# Under pytest-xdist (`make test-fast` runs two workers) each worker has its own database and Redis db.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
PG_URL = os.environ.get("MEMBERBOT_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("MEMBERBOT_TEST_REDIS_URL", "")
if WORKER and REDIS_URL:
    _base, _, _db = REDIS_URL.rpartition("/")
    REDIS_URL = f"{_base}/{int(_db or 0) + int(WORKER.removeprefix('gw'))}"
SECRET = "test-secret-key-0123456789abcdef0123456789"


TEST_DATABASE = "memberbot_test"
# Staff passwords are hashed with argon2's cheapest parameters here (a login per test adds up); the
# service keeps argon2-cffi's defaults (tests/test_staff_auth.py checks them).
accounts.hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def pytest_configure(config: pytest.Config) -> None:
    if PG_URL and not PG_URL.startswith(("postgres://", "postgresql://")):
        raise pytest.UsageError("MEMBERBOT_TEST_DATABASE_URL must be a postgres:// URL")


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's PostgreSQL database: the configured one, or an embedded server's."""
    if PG_URL:
        yield asyncio.run(dbutil.worker_database(PG_URL, WORKER)) if WORKER else PG_URL
        return
    with EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", durable=False) as server:
        server.create_database(TEST_DATABASE)
        yield server.url(TEST_DATABASE)


@pytest.fixture(scope="session")
def migrated_template(postgres_url: str) -> str:
    """Apply the migrations once, to an empty schema."""
    asyncio.run(dbutil.reset_postgres(postgres_url))
    asyncio.run(dbutil.migrate(postgres_url))
    return postgres_url


@pytest.fixture
def database_url(migrated_template: str) -> str:
    asyncio.run(dbutil.truncate_postgres(migrated_template))
    return migrated_template


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
        database_url=database_url,
        redis_url=redis_url,
        secret_key=SECRET,
        wechat_api_base="http://127.0.0.1:9",
        public_base_url="http://testserver",
    )


async def no_jobs(job: str, now: Any) -> None:
    raise AssertionError(f"the test app's scheduler has no jobs, yet ran {job}")


@pytest.fixture
def make_app(settings: Settings) -> Any:
    """The app under test. Its embedded scheduler (memory:// only) has no jobs, so a test that happens to
    run at :05 past the hour never sees points maintenance; scheduler tests set their own config."""

    def factory(**overrides: Any) -> web.Application:
        app = create_app(settings.model_copy(update=overrides))
        app[SCHEDULER_CONFIG] = SchedulerConfig(schedule=(), runner=no_jobs)
        return app

    return factory


@pytest.fixture
async def client(aiohttp_client: Any, make_app: Any) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(make_app())


real_redis = pytest.mark.skipif(not REDIS_URL, reason="needs MEMBERBOT_TEST_REDIS_URL (a shared Redis)")
