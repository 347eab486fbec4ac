"""The bare baseline for webhook benchmarks: check the signature, parse with wechatpy, reply a fixed text.

No database, no Redis, no dedup, no dispatcher: the floor any WeChat webhook in aiohttp pays. Safe mode
decrypts and encrypts with wechatpy like the real endpoint does. Run: python -m bench.baseline --port N
"""

from __future__ import annotations

import argparse
import hashlib
import hmac

import xmltodict
from aiohttp import web
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.replies import TextReply

from bot.demo import DEMO

REPLY_TEXT = "这是固定的帮助回复。"
CRYPTO: web.AppKey[WeChatCrypto] = web.AppKey("crypto", WeChatCrypto)


def signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def push(request: web.Request) -> web.Response:
    query = request.query
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    body = await request.text()
    crypto = request.app[CRYPTO]
    if query.get("encrypt_type") == "aes":
        envelope = str(xmltodict.parse(body)["xml"]["Encrypt"])
        expected = signature(DEMO.oa_token, timestamp, nonce, envelope)
        if not hmac.compare_digest(expected, query.get("msg_signature", "")):
            raise web.HTTPForbidden()
        xml = crypto.decrypt_message({"Encrypt": envelope}, expected, timestamp, nonce)
    else:
        if not hmac.compare_digest(signature(DEMO.oa_token, timestamp, nonce), query.get("signature", "")):
            raise web.HTTPForbidden()
        xml = body
    message = parse_message(xml)
    reply = TextReply(content=REPLY_TEXT, message=message).render()
    if query.get("encrypt_type") == "aes":
        reply = crypto.encrypt_message(reply, nonce)
    return web.Response(text=reply, content_type="application/xml")


def create_app() -> web.Application:
    app = web.Application()
    app[CRYPTO] = WeChatCrypto(DEMO.oa_token, DEMO.oa_aes_key, DEMO.oa_appid)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/wechat/{merchant_slug}", push)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(create_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
