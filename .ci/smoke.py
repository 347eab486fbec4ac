"""CI smoke check: a WeChat-signed 帮助 text message to the demo merchant gets a well-formed reply."""

from __future__ import annotations

import hashlib
import sys
import time
import urllib.request
import uuid
from urllib.parse import urlencode

from defusedxml import ElementTree

TOKEN = "memberbotdemo"  # noqa: S105 - the demo merchant's public token (bot/demo.py)
XML = """<xml><ToUserName><![CDATA[gh_demo]]></ToUserName><FromUserName><![CDATA[o-ci-smoke]]></FromUserName>
<CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[帮助]]></Content>
<MsgId>{msg_id}</MsgId></xml>"""


def main(base_url: str) -> int:
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
