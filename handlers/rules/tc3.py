"""Tencent Cloud API 3.0 request signing (TC3-HMAC-SHA256), as published in Tencent's "Signature v3".

canonical request (method, URI, query, canonical headers, signed header names, SHA-256 of the payload)
→ string to sign (algorithm, timestamp, `date/service/tc3_request`, SHA-256 of the canonical request)
→ key: HMAC-SHA256 chained over "TC3"+SecretKey, the UTC date, the service, "tc3_request"
→ `Authorization: TC3-HMAC-SHA256 Credential=<id>/<scope>, SignedHeaders=<names>, Signature=<hex>`.

Both sides use it: the SMS provider signs (`handlers.campaigns.sms`), the simulator verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"
_AUTHORIZATION = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[a-z0-9]+)"
    r"/tc3_request, "
    r"SignedHeaders=(?P<headers>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$"
)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def utc_date(timestamp: int) -> str:
    """The credential's date: the UTC date of the timestamp (never the local one)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def canonical_request(
    method: str, uri: str, query: str, headers: Mapping[str, str], signed: tuple[str, ...], payload: bytes
) -> str:
    """Headers lower-cased and trimmed, in the order of `signed` (sorted names)."""
    lowered = {name.lower(): value.strip().lower() for name, value in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered[name]}\n" for name in signed)
    return "\n".join([method, uri, query, canonical_headers, ";".join(signed), sha256_hex(payload)])


def string_to_sign(timestamp: int, service: str, canonical: str) -> str:
    scope = f"{utc_date(timestamp)}/{service}/tc3_request"
    return "\n".join([ALGORITHM, str(timestamp), scope, sha256_hex(canonical.encode())])


def signature(secret_key: str, timestamp: int, service: str, to_sign: str) -> str:
    key = _hmac(("TC3" + secret_key).encode(), utc_date(timestamp))
    key = _hmac(_hmac(key, service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def authorization(
    secret_id: str,
    secret_key: str,
    *,
    service: str,
    host: str,
    payload: bytes,
    timestamp: int,
    content_type: str = CONTENT_TYPE,
) -> str:
    """The `Authorization` header of a POST to `https://<host>/` with a JSON `payload`."""
    signed = ("content-type", "host")
    headers = {"content-type": content_type, "host": host}
    canonical = canonical_request("POST", "/", "", headers, signed, payload)
    to_sign = string_to_sign(timestamp, service, canonical)
    scope = f"{utc_date(timestamp)}/{service}/tc3_request"
    return (
        f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={';'.join(signed)}, "
        f"Signature={signature(secret_key, timestamp, service, to_sign)}"
    )


@dataclass(frozen=True, slots=True)
class Credential:
    secret_id: str
    date: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(header: str) -> Credential | None:
    match = _AUTHORIZATION.match(header)
    if match is None:
        return None
    return Credential(
        match["id"], match["date"], match["service"], tuple(match["headers"].split(";")), match["signature"]
    )


def verify(
    header: str,
    secret_key: str,
    *,
    method: str,
    headers: Mapping[str, str],
    payload: bytes,
    timestamp: int,
) -> bool:
    """Whether `header` signs this request with `secret_key` (the server side of the scheme)."""
    credential = parse_authorization(header)
    if credential is None or credential.date != utc_date(timestamp):
        return False
    if not {"content-type", "host"} <= set(credential.signed_headers):
        return False
    lowered = {name.lower(): value for name, value in headers.items()}
    if any(name not in lowered for name in credential.signed_headers):
        return False
    canonical = canonical_request(method, "/", "", lowered, credential.signed_headers, payload)
    expected = signature(
        secret_key, timestamp, credential.service, string_to_sign(timestamp, credential.service, canonical)
    )
    return hmac.compare_digest(expected, credential.signature)
