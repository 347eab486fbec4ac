"""Points and tiers: the points ledger, check-in, tiers, configuration, bonuses, referrals, what-if."""
