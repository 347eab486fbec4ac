"""SMS through a provider: `LoggingProvider` (the default: logs a masked number, sends nothing) or
`TencentSms`, Tencent Cloud SMS API 3.0 `SendSms` (version 2021-01-11) signed with TC3-HMAC-SHA256
(`handlers.rules.tc3`). Marketing SMS go only to members with a phone and SMS consent; the approved
template carries the opt-out (回复TD退订), and a member's reply TD withdraws the consent."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from handlers.rules import tc3

log = logging.getLogger(__name__)
SMS_VERSION = "2021-01-11"
# Tencent's codes for a passing condition: the message may be tried again later.
RETRIED_CODES = frozenset({"InternalError", "RequestLimitExceeded", "FailedOperation.FailResolvePacket"})


class SmsUnavailable(Exception):
    """The provider did not take the message for a passing reason (network, 5xx, its rate limit)."""


@dataclass(frozen=True, slots=True)
class SmsResult:
    ok: bool
    code: str  # "Ok" or the provider's error code
    serial: str = ""


class SmsProvider(Protocol):
    name: str

    async def send(self, phone: str, template_id: str, params: Sequence[str], *, session: str) -> SmsResult:
        """Send one templated SMS; `session` is echoed back by the provider (our recipient id)."""
        ...


def e164(phone: str) -> str:
    """Mainland numbers as +86…; numbers given with a + are kept."""
    return phone if phone.startswith("+") else f"+86{phone}"


def masked(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 7 else "****"


@dataclass
class LoggingProvider:
    """Sends nothing: one log line per message (the number masked). What memberbot uses until an SMS
    provider is configured."""

    name: str = "log"
    sent: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)

    async def send(self, phone: str, template_id: str, params: Sequence[str], *, session: str) -> SmsResult:
        self.sent.append((phone, template_id, tuple(params)))
        log.info("sms (logging provider)", extra={"phone": masked(phone), "template": template_id})
        return SmsResult(True, "Ok", f"log-{session}")


@dataclass
class TencentSms:
    """Tencent Cloud SMS. `endpoint`: https://sms.tencentcloudapi.com/ (or the simulator's /tencent-sms/)."""

    http: aiohttp.ClientSession
    endpoint: str
    secret_id: str
    secret_key: str = field(repr=False)
    sdk_app_id: str
    sign_name: str
    region: str = "ap-guangzhou"
    name: str = "tencent"

    async def send(self, phone: str, template_id: str, params: Sequence[str], *, session: str) -> SmsResult:
        payload = json.dumps(
            {
                "PhoneNumberSet": [e164(phone)],
                "SmsSdkAppId": self.sdk_app_id,
                "SignName": self.sign_name,
                "TemplateId": template_id,
                "TemplateParamSet": list(params),
                "SessionContext": session,
            },
            ensure_ascii=False,
        ).encode()
        host = urlsplit(self.endpoint).netloc
        timestamp = int(time.time())
        headers = {
            "Authorization": tc3.authorization(
                self.secret_id,
                self.secret_key,
                service="sms",
                host=host,
                payload=payload,
                timestamp=timestamp,
            ),
            "Content-Type": tc3.CONTENT_TYPE,
            "Host": host,
            "X-TC-Action": "SendSms",
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": SMS_VERSION,
            "X-TC-Region": self.region,
        }
        try:
            async with self.http.post(self.endpoint, data=payload, headers=headers) as response:
                if response.status >= 500:
                    raise SmsUnavailable(f"HTTP {response.status}")
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SmsUnavailable(type(exc).__name__) from None
        return _result(answer)


def _result(answer: object) -> SmsResult:
    body = answer.get("Response") if isinstance(answer, dict) else None
    if not isinstance(body, dict):
        raise SmsUnavailable("an answer without Response")
    error = body.get("Error")
    if isinstance(error, dict):
        code = str(error.get("Code", "Error"))
        if code in RETRIED_CODES:
            raise SmsUnavailable(code)
        return SmsResult(False, code[:64])
    statuses = body.get("SendStatusSet")
    if not isinstance(statuses, list) or not statuses or not isinstance(statuses[0], dict):
        raise SmsUnavailable("an answer without SendStatusSet")
    status = statuses[0]
    code = str(status.get("Code", ""))
    return SmsResult(code == "Ok", code[:64], str(status.get("SerialNo", "")))
