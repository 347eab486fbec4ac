"""The dependency arrows of STYLE.md, checked with `ast`: bot → webhooks → handlers → models."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["bot", "webhooks", "handlers", "models"]
ALLOWED = {  # what each package may import from the project
    "bot": {"bot", "webhooks", "handlers", "models"},
    "webhooks": {"webhooks", "handlers", "models"},
    "handlers": {"handlers", "models"},
    "models": {"models"},
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", LAYERS)
def test_each_layer_imports_only_downward(package: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources(package)
        for name in imports(path)
        if name.split(".")[0] in LAYERS and name.split(".")[0] not in ALLOWED[package]
    }
    assert not wrong, sorted(wrong)


def test_rule_engines_import_only_the_standard_library() -> None:
    wrong = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources("handlers/rules")
        for name in imports(path)
        if name != "__future__"
        and name.split(".")[0] not in sys.stdlib_module_names
        and not name.startswith("handlers.rules")
    }
    assert not wrong, sorted(wrong)
