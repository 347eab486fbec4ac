"""`TORTOISE_ORM` for tortoise's own CLI (`make migrations` → `python -m tortoise makemigrations`)."""

import os

from models import tortoise_config

TORTOISE_ORM = tortoise_config(os.environ.get("DATABASE_URL", "sqlite://:memory:"))
