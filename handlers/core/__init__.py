"""Shared plumbing of the use cases: errors, hand-written queries, the audit log, background tasks,
templating, the in-process scheduler."""
