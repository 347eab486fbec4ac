"""`TORTOISE_ORM` for tortoise's own CLI (`make migrations` → `python -m tortoise makemigrations`)."""

import os

from models import tortoise_config

TORTOISE_ORM = tortoise_config(
    os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/memberbot"
)
