"""The OpenAPI document describes the JSON API, and the API keeps to it under schemathesis fuzzing.

The app runs on a real loopback port in the test's event loop; schemathesis (synchronous, `requests`)
runs in a worker thread. Authenticated operations get a freshly issued token per example (so fuzzing a
logout does not end the other examples' sessions), against a seeded merchant, admin and member.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from handlers.core.templating import Renderer
from handlers.members import lookup as members
from handlers.staff.accounts import create_staff
from handlers.staff.merchants import MerchantInput, create_merchant
from handlers.staff.sessions import SessionKind, SessionStore
from tests.support.wechat_sim import WeChatSim
from webhooks.appkeys import REDIS, RENDERER

MP_APPID, MP_SECRET = "wxmpfuzz00000001", "mp-fuzz-secret"
OA_APPID, OA_SECRET = "wxoafuzz00000001", "oa-fuzz-secret"  # the menu push reaches the simulator
EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FIXED_PATH = {"merchant_slug": "demo", "name": "welcome"}


def reply_templates(root: Path) -> Path:
    folder = root / "replies"
    folder.mkdir(parents=True)
    (folder / "welcome.txt.j2").write_text("欢迎 {{ name }}！")
    (folder / "points_earned.txt.j2").write_text("本次获得 {{ points }} 积分")
    return root


async def test_document_lists_every_json_endpoint(client: Any) -> None:
    response = await client.get("/api/openapi.json")
    assert response.status == 200
    doc = await response.json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) >= {
        "/healthz",
        "/api/openapi.json",
        "/api/mp/{merchant_slug}/login",
        "/api/mp/{merchant_slug}/logout",
        "/api/mp/{merchant_slug}/me",
        "/api/staff/login",
        "/api/staff/logout",
        "/api/staff/me",
        "/api/admin/reply-templates",
        "/api/admin/reply-templates/{name}",
    }
    assert set(doc["paths"]["/api/mp/{merchant_slug}/me"]) == {"get", "patch"}
    assert doc["components"]["securitySchemes"]["staffSession"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Staff session token from POST /api/staff/login.",
    }


async def test_document_declares_errors_auth_and_bodies(client: Any) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    put = doc["paths"]["/api/admin/reply-templates/{name}"]["put"]
    assert put["security"] == [{"staffSession": []}]
    assert {"400", "401", "403", "404", "413"} <= set(put["responses"])
    assert put["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TemplateSourceIn"
    }
    assert put["parameters"][0]["name"] == "name" and put["parameters"][0]["in"] == "path"
    staff_login = doc["paths"]["/api/staff/login"]["post"]
    assert "security" not in staff_login
    assert {"401", "423", "429"} <= set(staff_login["responses"])
    assert "Retry-After" in doc["components"]["responses"]["Error423"]["headers"]
    envelope = doc["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["required"] == ["error"]
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["code", "message"]
    assert doc["components"]["schemas"]["StaffLoginIn"]["additionalProperties"] is False
    # The member profile never exposes WeChat's session key nor the raw phone number.
    member_fields = set(doc["components"]["schemas"]["MemberOut"]["properties"])
    assert member_fields == {
        "code",
        "name",
        "phone",
        "birthday",
        "gender",
        "registered_at",
        "profile_complete",
    }


def _fuzz(base_url: str, token_for: Callable[[str], str]) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        security = operation.definition.raw.get("security") or []
        scheme = next(iter(security[0]), None) if security else None
        params = {p.name: FIXED_PATH[p.name] for p in operation.path_parameters if p.name in FIXED_PATH}
        body_or_params = bool(params) or operation.body
        # (cases, with a token, checks, examples): the seeded merchant's paths, arbitrary paths, no token,
        # and schema-violating input (which must be refused with a 4xx).
        runs: list[tuple[Any, bool, list[Any], int]] = [
            (operation.as_strategy(path_parameters=params), True, CHECKS, EXAMPLES),
            (operation.as_strategy(), True, CHECKS, EXAMPLES // 2),
            (operation.as_strategy(path_parameters=params), False, CHECKS, EXAMPLES // 5),
        ]
        if body_or_params:
            negative = operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=params)
            runs.append((negative, True, [*CHECKS, negative_data_rejection], EXAMPLES // 2))
        for strategy, authed, checks, examples in runs:
            _run(strategy, base_url, token_for, scheme if authed else None, checks, examples)


def _run(
    strategy: Any,
    base_url: str,
    token_for: Callable[[str], str],
    scheme: str | None,
    checks: list[Any],
    examples: int,
) -> None:
    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        headers = {"Authorization": f"Bearer {token_for(scheme)}"} if scheme else None
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        case.validate_response(response, checks=checks, headers=headers)

    check()


@pytest.mark.slow
async def test_api_conforms_to_its_document(
    aiohttp_server: Any, make_app: Any, wechat_sim: WeChatSim, tmp_path: Path
) -> None:
    wechat_sim.add_app(MP_APPID, MP_SECRET)
    wechat_sim.add_app(OA_APPID, OA_SECRET)
    app = make_app(wechat_api_base=wechat_sim.url)
    app[RENDERER] = Renderer(reply_templates(tmp_path / "templates"))
    server = await aiohttp_server(app)
    merchant = await create_merchant(
        MerchantInput(
            slug="demo",
            name="演示商户",
            mp_appid=MP_APPID,
            mp_secret=MP_SECRET,
            oa_appid=OA_APPID,
            oa_secret=OA_SECRET,
        )
    )
    admin = await create_staff(
        merchant, store_code="main", username="admin", role="admin", password="admin-password-1"
    )
    member = await members.create_member(merchant, mp_openid="o-fuzz-member")
    store = SessionStore(app[REDIS])
    loop = asyncio.get_running_loop()
    subjects = {
        "memberSession": (SessionKind.MEMBER, member.id),
        "staffSession": (SessionKind.STAFF, admin.id),
    }

    def token_for(scheme: str) -> str:
        kind, subject = subjects[scheme]
        issued = asyncio.run_coroutine_threadsafe(store.issue(kind, merchant.id, subject), loop).result(10)
        return issued.token

    await asyncio.to_thread(_fuzz, str(server.make_url("")).rstrip("/"), token_for)
