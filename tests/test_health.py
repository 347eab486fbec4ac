from __future__ import annotations

from typing import Any


async def test_healthz_reports_both_up(client: Any) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


async def test_healthz_names_redis_when_it_is_down(aiohttp_client: Any, make_app: Any) -> None:
    client = await aiohttp_client(make_app(redis_url="redis://127.0.0.1:1/0"))
    response = await client.get("/healthz")
    assert response.status == 503
    assert (await response.json())["checks"] == {"database": "ok", "redis": "down"}


async def test_unknown_route_is_json_404(client: Any) -> None:
    response = await client.get("/nope")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


def test_a_bad_setting_stops_the_cli_with_one_line_and_exit_code_2() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "TIMEZONE": "Mars/Base", "DEMO": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "merchant", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "memberbot: invalid setting TIMEZONE: Value error, unknown IANA time zone 'Mars/Base'"
    ]
