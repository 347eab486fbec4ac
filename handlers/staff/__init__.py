"""Merchants, stores, staff accounts, staff login and bearer sessions."""
