"""The outbound WeChat API client and WeChat-specific helpers (crypto, parsing)."""
