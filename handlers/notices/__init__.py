"""Member notices: what a member is told when something happens to them, on which WeChat channel, and
the record of each delivery."""
