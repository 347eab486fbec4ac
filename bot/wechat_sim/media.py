"""The emulated media endpoints: `cgi-bin/media/upload` (multipart) and `cgi-bin/showqrcode` (a picture).

Neither takes a JSON body, so they have their own request wrapper; they are recorded like every other
endpoint (the upload's body is recorded as its type, file name, content type and size, never its bytes).

- `media/upload?type=image`: field `media`, PNG/JPEG/GIF up to 10 MB (40004 unknown type, 41005 no file,
  40006 too large, 40005 not an image); answers `{type, media_id, created_at}`. The media lives three
  days (`SimState.live_media`), and a customer-service `image` message must name one of the account's.
- `showqrcode?ticket=`: the PNG of the QR content of a ticket `qrcode/create` issued and that has not
  expired (no access token, like WeChat's); otherwise HTTP 404.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import qrcode
from aiohttp import BodyPartReader, web

from bot.wechat_sim.api import SIM_STATE, _error
from bot.wechat_sim.state import SimError, SimMedia, SimState

Body = dict[str, Any]
MEDIA_LIMITS = {
    "image": 10 * 1024 * 1024,
    "voice": 2 * 1024 * 1024,
    "video": 10 * 1024 * 1024,
    "thumb": 65536,
}
IMAGE_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}
UPLOAD, SHOWQRCODE = "cgi-bin/media/upload", "cgi-bin/showqrcode"


async def _media_part(request: web.Request, limit: int) -> tuple[Body, bytes]:
    """The `media` file of a multipart upload (read no further than `limit` + 1 bytes)."""
    if not request.content_type.startswith("multipart/"):
        raise SimError(41005, "media data missing")
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name != "media":
            continue
        data = bytearray()
        while chunk := await part.read_chunk(65536):
            data += chunk
            if len(data) > limit:
                break
        info = {"filename": part.filename or "", "content_type": part.headers.get("Content-Type", "")}
        return info, bytes(data)
    raise SimError(41005, "media data missing")


async def media_upload(state: SimState, request: web.Request, record: Body) -> Body:
    appid = state.check_token(request.query.get("access_token")).appid
    kind = request.query.get("type", "")
    if kind not in MEDIA_LIMITS:
        raise SimError(40004, "invalid media type")
    info, data = await _media_part(request, MEDIA_LIMITS[kind])
    record["body"] = {"type": kind, **info, "size": len(data)}
    if not data:
        raise SimError(41005, "media data missing")
    if len(data) > MEDIA_LIMITS[kind]:
        raise SimError(40006, "invalid meida size")
    content_type = next((known for magic, known in IMAGE_TYPES.items() if data.startswith(magic)), "")
    if kind in ("image", "thumb") and not content_type:
        raise SimError(40005, "invalid file type")
    media_id = "SIMMEDIA" + secrets.token_urlsafe(32)
    created = state.now()
    state.media[media_id] = SimMedia(appid, kind, content_type, data, created)
    return {"type": kind, "media_id": media_id, "created_at": int(created)}


async def showqrcode(state: SimState, request: web.Request, record: Body) -> web.Response:
    found = state.qrcodes.get(request.query.get("ticket", ""))
    if found is None or (found["expires_at"] is not None and found["expires_at"] <= state.now()):
        record["errcode"] = 404
        return web.Response(status=404, text="ticket not found or expired")
    png = io.BytesIO()
    qrcode.make(found["url"]).save(png)
    return web.Response(body=png.getvalue(), content_type="image/png")


Served = Callable[[SimState, web.Request, Body], Awaitable[Body | web.Response]]


def _serve(endpoint: str, handler: Served) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def serve(request: web.Request) -> web.StreamResponse:
        state = request.app[SIM_STATE]
        record: Body = {
            "endpoint": endpoint,
            "method": request.method,
            "query": dict(request.query),
            "body": None,
            "raw": "",
            "errcode": 0,
            "at": state.now(),
        }
        state.recorded.append(record)
        try:
            injected = state.take_injected(endpoint)
            if injected is not None:
                record["errcode"] = injected.errcode
                if injected.status >= 500:
                    return web.Response(status=injected.status, text="simulated server error")
                raise SimError(injected.errcode, injected.errmsg)
            answer = await handler(state, request, record)
        except SimError as exc:
            record["errcode"] = exc.errcode
            return _error(exc.errcode, exc.errmsg)
        if isinstance(answer, web.Response):
            return answer
        return web.json_response(answer)

    return serve


def add_media_routes(app: web.Application) -> None:
    app.router.add_post(f"/{UPLOAD}", _serve(UPLOAD, media_upload))
    app.router.add_get(f"/{SHOWQRCODE}", _serve(SHOWQRCODE, showqrcode))
