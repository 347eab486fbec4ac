"""HTTP doors: thin aiohttp endpoints that validate, call one use case and map the result."""
