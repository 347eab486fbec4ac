"""CI smoke checks against `make run`: a WeChat-signed 帮助 text message to the demo merchant gets a
well-formed reply, a mini-program login works through the in-process WeChat simulator (a code from
/wechat-sim/sim/codes, then /api/mp/demo/login and /api/mp/demo/me with the bearer token), and the demo
admin logs in to the console at /admin."""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import urlencode

from defusedxml import ElementTree

TOKEN = "memberbotdemo"  # noqa: S105 - the demo merchant's public token (bot/demo.py)
MP_APPID = "wxdemo0000000000b"  # the demo merchant's mini-program (bot/demo.py)
XML = """<xml><ToUserName><![CDATA[gh_demo]]></ToUserName><FromUserName><![CDATA[o-ci-smoke]]></FromUserName>
<CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[帮助]]></Content>
<MsgId>{msg_id}</MsgId></xml>"""


def call(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback only
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
        return json.loads(response.read())


def help_reply(base_url: str) -> int:
    timestamp, nonce = str(int(time.time())), uuid.uuid4().hex[:10]
    signature = hashlib.sha1("".join(sorted([TOKEN, timestamp, nonce])).encode()).hexdigest()  # noqa: S324
    query = urlencode({"signature": signature, "timestamp": timestamp, "nonce": nonce})
    body = XML.format(ts=timestamp, msg_id=int(time.time() * 1000)).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback only
        f"{base_url}/wechat/demo?{query}",
        data=body,
        method="POST",
        headers={"Content-Type": "text/xml"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
        reply = response.read().decode()
    root = ElementTree.fromstring(reply)
    content = root.findtext("Content") or ""
    addressed = root.findtext("ToUserName") == "o-ci-smoke"
    ok = root.findtext("MsgType") == "text" and addressed and "签到" in content
    print(f"ci: 帮助 reply {'ok' if ok else 'MALFORMED'}: {content[:60]!r}")
    return 0 if ok else 1


def mp_login(base_url: str) -> int:
    what = "mini-program login through the in-process simulator"
    openid = f"o-ci-smoke-{uuid.uuid4().hex[:8]}"
    try:
        code = call(f"{base_url}/wechat-sim/sim/codes", {"appid": MP_APPID, "openid": openid})["code"]
        login = call(f"{base_url}/api/mp/demo/login", {"code": code})
        me = call(f"{base_url}/api/mp/demo/me", token=login["token"])
    except urllib.error.HTTPError as exc:
        print(f"ci: {what} FAILED: {exc.code} {exc.url} {exc.read()[:200].decode(errors='replace')}")
        return 1
    ok = bool(login["token"]) and me["code"] == login["member"]["code"]
    print(f"ci: {what} {'ok' if ok else 'WRONG'}: member {me['code']}")
    return 0 if ok else 1


def console_login(base_url: str) -> int:
    """The console: the login page, the demo admin's login (a CSRF-protected form, a session cookie), the
    dashboard, and a vendored script served from the project's own static files."""
    what = "console login as the demo admin"
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    try:
        with opener.open(f"{base_url}/admin/login", timeout=10) as response:
            page = response.read().decode()
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
        if token is None:
            print(f"ci: {what} FAILED: no CSRF token on the login page")
            return 1
        form = {
            "csrf_token": token.group(1),
            "merchant": "demo",
            "username": "admin",
            "password": "memberbot-demo",
        }
        with opener.open(f"{base_url}/admin/login", data=urlencode(form).encode(), timeout=10) as response:
            dashboard = response.read().decode()
        with opener.open(f"{base_url}/admin/static/vendor/htmx-2.0.7.min.js", timeout=10) as response:
            script = response.read()
    except urllib.error.HTTPError as exc:
        print(f"ci: {what} FAILED: {exc.code} {exc.url}")
        return 1
    ok = "积分负债" in dashboard and "管理员" in dashboard and len(script) > 10_000
    print(f"ci: {what} {'ok' if ok else 'WRONG'}")
    return 0 if ok else 1


def main(base_url: str) -> int:
    return help_reply(base_url) | mp_login(base_url) | console_login(base_url)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
