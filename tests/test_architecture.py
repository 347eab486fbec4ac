"""The dependency arrows of STYLE.md, checked with `ast`: bot → webhooks → handlers → models."""

from __future__ import annotations

import ast
import re
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


def _package(path: Path) -> str:
    """`handlers/loyalty/ledger.py` → "loyalty"; a top-level module (`handlers/jobs.py`) is its own."""
    parts = path.relative_to(ROOT / "handlers").with_suffix("").parts
    return parts[0]


def _handler_imports(path: Path) -> set[str]:
    """The handlers packages a module imports (`handlers.x.y` and `from handlers import x` alike)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "handlers":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("handlers."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("handlers."))
    return found


def test_handlers_packages_form_no_cycle() -> None:
    """Packages by domain depend on each other in one direction (core and rules at the bottom)."""
    graph: dict[str, set[str]] = {}
    for path in sources("handlers"):
        package = _package(path)
        graph.setdefault(package, set()).update(_handler_imports(path) - {package})
    assert not graph.get("core", set()) - {"rules"}, graph["core"]
    assert not graph.get("rules"), graph["rules"]
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        assert node not in visiting, f"import cycle: {' → '.join([*visiting, node])}"
        if node in done:
            return
        visiting.append(node)
        for target in sorted(graph.get(node, ())):
            visit(target)
        visiting.pop()
        done.add(node)

    for package in sorted(graph):
        visit(package)


def test_no_module_imports_a_private_name_of_another_package() -> None:
    wrong = set()
    for package in LAYERS:
        for path in sources(package):
            home = ".".join(path.relative_to(ROOT).parts[:2])
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                    continue
                if node.module.split(".")[0] not in LAYERS or node.module.startswith(home):
                    continue
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private or any(part.startswith("_") for part in node.module.split(".")):
                    wrong.add(f"{path.relative_to(ROOT)}: from {node.module} import {', '.join(private)}")
    assert not wrong, sorted(wrong)


LEDGER_MODELS = (
    r"(PointsAccount|PointsTransaction|PointsLot|PointsDraw|WalletAccount|WalletTransaction"
    r"|CreditAccount|CreditEntry)"
)
LEDGER_WRITES = (
    re.compile(
        r"(?i)\b(insert\s+into|update|delete\s+from)\s+\"?"
        r"((points|wallet)_(account|transaction|lot|draw)|credit_(account|entry))\b"
    ),
    re.compile(LEDGER_MODELS + r"\.(create|bulk_create|get_or_create|update_or_create|bulk_update)\("),
    re.compile(LEDGER_MODELS + r"\b[^\n]*\)\.(update|delete)\("),
)


@pytest.mark.parametrize("package", ["bot", "webhooks", "handlers"])
def test_only_the_ledger_functions_write_the_ledger_tables(package: str) -> None:
    """Points, stored value and credit are written by the PostgreSQL functions of migrations 0010 and
    0019 alone: no Python module inserts, updates or deletes their rows (the ORM's writes included)."""
    wrong = {
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources(package)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(pattern.search(line) for pattern in LEDGER_WRITES)
    }
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize(
    "module", ["handlers/loyalty/ledger.py", "handlers/wallet/ledger.py", "handlers/credit/ledger.py"]
)
def test_the_ledger_modules_save_no_model(module: str) -> None:
    assert ".save(" not in (ROOT / module).read_text()
