"""Domain errors: each carries an ErrorCode; the HTTP layer and the chat bot map them."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    VALIDATION = "validation_error"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    LOCKED = "account_locked"
    UNAVAILABLE = "service_unavailable"
    INTERNAL = "internal_error"
    # Domain-specific codes.
    MERCHANT_NOT_FOUND = "merchant_not_found"
    MEMBER_NOT_FOUND = "member_not_found"
    MEMBER_BLOCKED = "member_blocked"
    BAD_SIGNATURE = "bad_signature"
    STALE_TIMESTAMP = "stale_timestamp"
    BAD_MESSAGE = "bad_message"
    WECHAT_ERROR = "wechat_error"
    INSUFFICIENT_POINTS = "insufficient_points"
    CARD_EXPIRED = "card_expired"
    CARD_INVALID = "card_invalid"
    COUPON_NOT_FOUND = "coupon_not_found"
    COUPON_USED = "coupon_used"
    COUPON_EXPIRED = "coupon_expired"
    COUPON_NOT_APPLICABLE = "coupon_not_applicable"
    COUPON_REVOKED = "coupon_revoked"
    COUPON_TEMPLATE_NOT_FOUND = "coupon_template_not_found"
    COUPON_TEMPLATE_INACTIVE = "coupon_template_inactive"
    COUPON_OUT_OF_STOCK = "coupon_out_of_stock"
    COUPON_LIMIT_REACHED = "coupon_limit_reached"
    IDEMPOTENCY_MISMATCH = "idempotency_mismatch"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    SERVICE_CARD_EXHAUSTED = "service_card_exhausted"
    SERVICE_CARD_EXPIRED = "service_card_expired"
    SERVICE_CARD_NOT_STARTED = "service_card_not_started"
    SERVICE_CARD_REVOKED = "service_card_revoked"
    CREDIT_LIMIT_EXCEEDED = "credit_limit_exceeded"
    CREDIT_BELOW_OWED = "credit_below_owed"
    CREDIT_OVERPAID = "credit_overpaid"


class DomainError(Exception):
    """A failure the caller can act on. `field` names the offending input, if any."""

    code: ErrorCode = ErrorCode.VALIDATION

    def __init__(self, message: str, *, code: ErrorCode | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field


class IdempotencyMismatch(DomainError):
    """The idempotency key was used before for a different request (409): nothing changed."""

    code = ErrorCode.IDEMPOTENCY_MISMATCH

    def __init__(self, message: str = "幂等键 idempotency_key 已用于另一笔请求") -> None:
        super().__init__(message, field="idempotency_key")


class ValidationError(DomainError):
    code = ErrorCode.VALIDATION


class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND


class Conflict(DomainError):
    code = ErrorCode.CONFLICT


class Unauthorized(DomainError):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(DomainError):
    code = ErrorCode.FORBIDDEN
