"""Stored value (储值) and service cards: the wallet ledger, its audit, count and time cards."""
