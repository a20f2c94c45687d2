"""The packages depend one way (docs/architecture.md): ``server -> resolvers -> (sync, db)``.

``schema`` holds the GraphQL types the resolvers share and ``server`` builds the app (and
the Schema) from them, so neither ``resolvers`` nor ``schema`` imports ``server``; ``db``
imports only itself and ``sync``, and ``sync`` only itself. Every import counts, those
inside functions and under ``TYPE_CHECKING`` too: the files are read, not imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schema", "resolvers", "db", "sync", "server")
# The packages of ours each package may import (besides itself).
ALLOWED = {
    "sync": set(),
    "db": {"sync"},
    "schema": {"db", "sync", "resolvers"},
    "resolvers": {"db", "sync", "schema"},
    "server": {"db", "sync", "schema", "resolvers"},
}
# Where a package may reach up, the only modules it may import there: ``schema`` types'
# field resolvers take ``resolvers.context.Info`` and page their child connections with
# ``resolvers.lists.children_connection`` (imported inside those resolvers).
ONLY_MODULES = {"schema": {"resolvers": {"resolvers.context", "resolvers.lists"}}}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def climbing_imports(package: str) -> list[str]:
    """Imports of ``package``'s files that reach a package it may not depend on."""
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            only = ONLY_MODULES.get(package, {}).get(top)
            if only is not None and module not in only:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return wrong


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down(package: str) -> None:
    """No file of ``package`` imports a package above it."""
    assert climbing_imports(package) == []


def test_the_check_sees_a_climbing_import(tmp_path: Path) -> None:
    """An import inside a function, as the CLI and lazy paths write them, is found too."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from server.auth import bearer_token\n    import db.auth\n")
    assert imported_modules(module) == [(2, "server.auth"), (3, "db.auth")]
