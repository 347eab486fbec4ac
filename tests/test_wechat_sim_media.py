"""The simulator's media endpoints over HTTP: media/upload, showqrcode, customer-service image messages,
and the permanent QR code cap."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bot.wechat_sim import SimState, create_sim_app
from handlers.members.member_qr import qr_png
from tests.support.qr import encodes

APPID, SECRET, OTHER, FAN = "wxsim000000000001", "sim-secret", "wxsim000000000002", "o-sim-fan"
PNG = qr_png("http://weixin.qq.com/q/sim")


@pytest.fixture
def state() -> SimState:
    sim = SimState()
    sim.add_app(APPID, SECRET)
    sim.add_app(OTHER, "other-secret")
    sim.add_follower(APPID, FAN)
    return sim


@pytest.fixture
async def http(aiohttp_client: Any, state: SimState) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(create_sim_app(state))


async def token(http: TestClient, appid: str = APPID, secret: str = SECRET) -> str:
    body = {"grant_type": "client_credential", "appid": appid, "secret": secret}
    return str((await (await http.post("/cgi-bin/stable_token", json=body)).json())["access_token"])


async def upload(
    http: TestClient,
    data: bytes | None,
    *,
    kind: str = "image",
    access_token: str | None = None,
    field: str = "media",
) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field(field, io.BytesIO(data or b""), filename="qr.png", content_type="image/png")
    params = {"access_token": access_token or await token(http), "type": kind}
    response = await http.post("/cgi-bin/media/upload", params=params, data=form)
    assert response.status == 200
    return dict(await response.json())


def image(media_id: str, openid: str = FAN) -> dict[str, Any]:
    return {"touser": openid, "msgtype": "image", "image": {"media_id": media_id}}


async def send(http: TestClient, body: dict[str, Any], access_token: str | None = None) -> int:
    params = {"access_token": access_token or await token(http)}
    return int(
        (await (await http.post("/cgi-bin/message/custom/send", params=params, json=body)).json())["errcode"]
    )


async def test_upload_returns_a_media_id_and_is_recorded(http: TestClient, state: SimState) -> None:
    answer = await upload(http, PNG)
    assert set(answer) == {"type", "media_id", "created_at"} and answer["type"] == "image"
    assert state.media[answer["media_id"]].data == PNG
    [record] = state.records("cgi-bin/media/upload")
    assert record["body"] == {
        "type": "image",
        "filename": "qr.png",
        "content_type": "image/png",
        "size": len(PNG),
    }
    assert record["errcode"] == 0 and record["raw"] == ""


@pytest.mark.parametrize(
    ("data", "kind", "field", "errcode"),
    [
        (PNG, "pdf", "media", 40004),
        (None, "image", "media", 41005),
        (PNG, "image", "file", 41005),
        (b"%PDF-1.4 not an image", "image", "media", 40005),
        (PNG + b"\0" * (10 * 1024 * 1024), "image", "media", 40006),
    ],
)
async def test_upload_validation(
    http: TestClient, state: SimState, data: bytes | None, kind: str, field: str, errcode: int
) -> None:
    assert (await upload(http, data, kind=kind, field=field)).get("errcode") == errcode
    assert state.media == {}


async def test_upload_needs_a_valid_token_and_takes_injected_errors(
    http: TestClient, state: SimState
) -> None:
    assert (await upload(http, PNG, access_token="nope"))["errcode"] == 40001
    state.inject_error("cgi-bin/media/upload", 45009)
    assert (await upload(http, PNG))["errcode"] == 45009
    assert "media_id" in await upload(http, PNG)


async def test_image_messages_need_live_media_of_the_same_account(http: TestClient, state: SimState) -> None:
    state.interact(APPID, FAN)
    media_id = (await upload(http, PNG))["media_id"]
    theirs = (await upload(http, PNG, access_token=await token(http, OTHER, "other-secret")))["media_id"]
    assert await send(http, image(media_id)) == 0
    assert await send(http, image("SIMMEDIAunknown")) == 40007
    assert await send(http, image(theirs)) == 40007
    assert await send(http, {"touser": FAN, "msgtype": "image", "image": {}}) == 40007
    state.advance(3 * 86400)
    assert await send(http, image(media_id), await token(http)) == 40007
    assert state.windows[(APPID, FAN)].sent == 1


async def test_custom_quota_is_45047_and_the_window_45015(http: TestClient, state: SimState) -> None:
    state.interact(APPID, FAN)
    media_id = (await upload(http, PNG))["media_id"]
    answers = [await send(http, image(media_id)) for _ in range(6)]
    assert answers == [0] * 5 + [45047]
    state.advance(48 * 3600 + 1)
    assert await send(http, image(media_id), await token(http)) == 45015


async def qrcode(http: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    params = {"access_token": await token(http)}
    return dict(await (await http.post("/cgi-bin/qrcode/create", params=params, json=body)).json())


def scene(action: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"action_name": action, "action_info": {"scene": {"scene_str": value}}, **extra}


async def test_showqrcode_serves_issued_tickets_until_they_expire(http: TestClient, state: SimState) -> None:
    temporary = await qrcode(http, scene("QR_STR_SCENE", "ref_A", expire_seconds=60))
    permanent = await qrcode(http, scene("QR_LIMIT_STR_SCENE", "staff_1"))
    assert "expire_seconds" not in permanent
    shown = await http.get("/cgi-bin/showqrcode", params={"ticket": temporary["ticket"]})
    assert shown.status == 200 and shown.content_type == "image/png"
    assert encodes(await shown.read(), temporary["url"], box=10)
    assert (await http.get("/cgi-bin/showqrcode", params={"ticket": "SIMTICKETforged"})).status == 404
    assert (await http.get("/cgi-bin/showqrcode")).status == 404
    state.advance(61)
    assert (await http.get("/cgi-bin/showqrcode", params={"ticket": temporary["ticket"]})).status == 404
    assert (await http.get("/cgi-bin/showqrcode", params={"ticket": permanent["ticket"]})).status == 200
    assert [r["errcode"] for r in state.records("cgi-bin/showqrcode")] == [0, 404, 404, 404, 0]


async def test_permanent_codes_are_capped_per_account(http: TestClient, state: SimState) -> None:
    state.permanent_qr_limit = 2
    for value in ("a", "b"):
        assert "ticket" in await qrcode(http, scene("QR_LIMIT_STR_SCENE", value))
    refused = await qrcode(http, scene("QR_LIMIT_STR_SCENE", "c"))
    assert refused["errcode"] == 45029 and "qrcode count out of limit" in refused["errmsg"]
    assert "ticket" in await qrcode(http, scene("QR_STR_SCENE", "c", expire_seconds=60))
    assert state.permanent_qrcodes(APPID) == 2 and state.permanent_qrcodes(OTHER) == 0
