"""Coupons: templates and issuance, and what happens after (quote, use, restore, expiry)."""
