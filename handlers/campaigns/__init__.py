"""Campaigns: one message to an audience on one channel, within WeChat's rules and the merchant's
budgets, measured against a holdout; journeys send campaign content once per member on a trigger."""
