"""The one error every rule validator raises: which input field is wrong, and why."""

from __future__ import annotations


class RuleError(ValueError):
    """Invalid rule configuration. `field` is a path such as ``bands[1].min_fen``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
