"""The console dashboard's figures (simple queries until handlers/analytics lands)."""
