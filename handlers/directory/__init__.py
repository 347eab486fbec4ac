"""The merchant's back office of members: search and export, one member's page."""
