"""Use cases, the outbound WeChat client, and the pure rule engines in handlers.rules."""
