"""Every setting memberbot reads, from the environment, validated once at boot."""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DATA_DIR = ROOT / "var" / "pg"  # DATABASE_URL unset: a PostgreSQL 18 of our own, here
EMBEDDED_DATABASE = "memberbot"
EMBEDDED_REDIS_URL = "memory://"
WECHAT_API = "https://api.weixin.qq.com"  # WECHAT_API_BASE unset, outside demo mode
WECHAT_SIM_PREFIX = "/wechat-sim"  # WECHAT_API_BASE unset in demo mode: the simulator, mounted here


class Settings(BaseSettings):
    """Runtime configuration. Tests construct it explicitly; entry points call `Settings()`."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    database_url: str = Field("", description="postgres://…; empty: the embedded PostgreSQL under var/pg")
    database_read_url: str = Field(
        "",
        description="postgres://… of a streaming replica the analyses and exports read; empty: DATABASE_URL",
    )
    redis_url: str = Field(EMBEDDED_REDIS_URL, description="redis://host:port/db, or memory:// (in-process)")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    wechat_api_base: str = Field(
        "",
        description=f"WeChat API root; empty: {WECHAT_API}, or with DEMO=1 the in-process simulator",
    )
    secret_key: SecretStr | None = Field(None, description="signs member-card QR tokens and sessions")
    demo: bool = Field(False, description="demo mode: embedded defaults, generated secret key")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    public_base_url: str = Field("", description="absolute URL members reach (card and mall pages)")
    timezone: str = Field("Asia/Shanghai", description="default merchant timezone")
    workers: int = Field(1, ge=1, le=64, description="serve processes sharing PORT (PostgreSQL + Redis only)")
    sms_provider: Literal["log", "tencent"] = Field(
        "log", description="campaign SMS: log only, or Tencent Cloud"
    )
    tencent_sms_endpoint: str = Field("https://sms.tencentcloudapi.com/", description="SendSms endpoint")
    tencent_sms_secret_id: str = ""
    tencent_sms_secret_key: SecretStr | None = None
    tencent_sms_sdk_app_id: str = ""
    tencent_sms_sign_name: str = ""
    sms_verify_template_id: str = Field(
        "",
        description="SMS template of the phone verification code (one parameter, the code) that links an"
        " imported member to the follower who proves the phone; empty: imported members are not linked",
    )

    @field_validator("database_url", "database_read_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgres:// URL (or empty for the embedded PostgreSQL)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://", "memory://")):
            raise ValueError("must start with redis://, rediss://, unix:// or memory://")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("wechat_api_base", "public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _secret_required_outside_demo(self) -> Settings:
        if self.secret_key is None and not self.demo:
            raise ValueError("SECRET_KEY is required (set DEMO=1 only for a local demo)")
        if self.secret_key is not None and len(self.secret_key.get_secret_value()) < 32:
            raise ValueError("SECRET_KEY must be at least 32 characters")
        if self.database_read_url and not self.database_url:
            raise ValueError("DATABASE_READ_URL needs DATABASE_URL (the embedded PostgreSQL has no replica)")
        if self.workers > 1 and self.embedded:
            raise ValueError("WORKERS > 1 needs PostgreSQL and a real Redis (embedded: one process)")
        if not self.wechat_api_base and not self.demo:
            self.wechat_api_base = WECHAT_API
        tencent = (self.tencent_sms_secret_id, self.tencent_sms_secret_key, self.tencent_sms_sdk_app_id)
        if self.sms_provider == "tencent" and not (all(tencent) and self.tencent_sms_sign_name):
            raise ValueError(
                "SMS_PROVIDER=tencent needs TENCENT_SMS_SECRET_ID, TENCENT_SMS_SECRET_KEY, "
                "TENCENT_SMS_SDK_APP_ID and TENCENT_SMS_SIGN_NAME"
            )
        if self.workers > 1 and self.wechat_sim_in_process:
            # Each serve process would have a simulator of its own: a login code minted in one would be
            # unknown to the process the login request reaches.
            raise ValueError(
                "WORKERS > 1 needs WECHAT_API_BASE (the in-process WeChat simulator is one process)"
            )
        return self

    @property
    def embedded(self) -> bool:
        return not self.database_url or self.redis_url.startswith("memory://")

    @property
    def wechat_sim_in_process(self) -> bool:
        """Demo mode without WECHAT_API_BASE: the app serves the WeChat simulator under WECHAT_SIM_PREFIX."""
        return self.demo and not self.wechat_api_base

    def wechat_api_url(self) -> str:
        """The WeChat API root the client calls: WECHAT_API_BASE when set, else the in-process simulator
        (demo mode) or the real WeChat."""
        if self.wechat_api_base:
            return self.wechat_api_base
        if self.demo:
            return self.loopback_url() + WECHAT_SIM_PREFIX
        return WECHAT_API

    def loopback_url(self) -> str:
        """The URL this process reaches its own HTTP server at (a wildcard HOST means loopback)."""
        try:
            address = ipaddress.ip_address(self.host or "0.0.0.0")  # noqa: S104 - parsed, not bound
        except ValueError:  # a host name, e.g. localhost
            return f"http://{self.host}:{self.port}"
        if address.is_unspecified:
            address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"http://{host}:{self.port}"

    def secret(self) -> bytes:
        """The signing key; in demo mode one is generated once and kept under var/."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = ROOT / "var" / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip().encode()

    def base_url(self) -> str:
        return self.public_base_url or f"http://{self.host}:{self.port}"
