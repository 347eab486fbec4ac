"""TC3-HMAC-SHA256 against Tencent Cloud's published signing example ("Signature v3", CVM
DescribeInstances at 1551113065): each intermediate value and the final signature as the page gives them."""

from __future__ import annotations

from handlers.rules import tc3

# The example request of Tencent's "Signature v3" page.
SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
TIMESTAMP = 1551113065
HOST = "cvm.tencentcloudapi.com"
PAYLOAD = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
HASHED_PAYLOAD = "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
HASHED_CANONICAL = "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
SIGNATURE = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
HEADERS = {"content-type": "application/json; charset=utf-8", "host": HOST}


def test_the_published_example_step_by_step() -> None:
    assert tc3.sha256_hex(PAYLOAD) == HASHED_PAYLOAD
    canonical = tc3.canonical_request("POST", "/", "", HEADERS, ("content-type", "host"), PAYLOAD)
    assert canonical == (
        "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\n"
        f"content-type;host\n{HASHED_PAYLOAD}"
    )
    assert tc3.sha256_hex(canonical.encode()) == HASHED_CANONICAL
    to_sign = tc3.string_to_sign(TIMESTAMP, "cvm", canonical)
    assert to_sign == f"TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n{HASHED_CANONICAL}"
    assert tc3.signature(SECRET_KEY, TIMESTAMP, "cvm", to_sign) == SIGNATURE


def test_the_published_authorization_header() -> None:
    header = tc3.authorization(
        SECRET_ID, SECRET_KEY, service="cvm", host=HOST, payload=PAYLOAD, timestamp=TIMESTAMP
    )
    assert header == (
        f"TC3-HMAC-SHA256 Credential={SECRET_ID}/2019-02-25/cvm/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={SIGNATURE}"
    )


def test_the_date_is_utc_even_when_it_is_the_next_day_in_beijing() -> None:
    assert tc3.utc_date(TIMESTAMP) == "2019-02-25"  # 2019-02-26 00:44:25 in UTC+8


def test_verify_accepts_the_example_and_refuses_any_change() -> None:
    header = tc3.authorization(
        SECRET_ID, SECRET_KEY, service="cvm", host=HOST, payload=PAYLOAD, timestamp=TIMESTAMP
    )
    ok = {
        "method": "POST",
        "headers": {"Content-Type": HEADERS["content-type"], "Host": HOST},
        "timestamp": TIMESTAMP,
    }
    assert tc3.verify(header, SECRET_KEY, payload=PAYLOAD, **ok)  # type: ignore[arg-type]
    assert not tc3.verify(header, "another-key", payload=PAYLOAD, **ok)  # type: ignore[arg-type]
    assert not tc3.verify(header, SECRET_KEY, payload=PAYLOAD + b" ", **ok)  # type: ignore[arg-type]
    assert not tc3.verify(header, SECRET_KEY, payload=PAYLOAD, **{**ok, "timestamp": TIMESTAMP + 86400})  # type: ignore[arg-type]
    assert not tc3.verify(header.replace("Signature=7", "Signature=8"), SECRET_KEY, payload=PAYLOAD, **ok)  # type: ignore[arg-type]
    assert not tc3.verify("Bearer x", SECRET_KEY, payload=PAYLOAD, **ok)  # type: ignore[arg-type]
