"""One source of truth for the schema: the models describe exactly what the migrations build.

The migrated database of ``fresh_db`` (an empty database brought to ``head``) is compared with
``geoservice.db.models`` by Alembic's autogenerate comparison plus what it leaves out (primary
keys, CHECK constraints, partitioning, index methods and operator classes): no difference.
"""

from __future__ import annotations

import ast
from pathlib import Path

from geoservice.db.migrate import MIGRATIONS, current_revision, head_revision, schema_differences

PROJECT_PACKAGES = ("geoservice", "ingest", "layers", "web")


def test_models_match_the_migrated_database(fresh_db: str) -> None:
    assert current_revision(fresh_db) == head_revision()
    assert schema_differences(fresh_db) == []


def imported_modules(path: Path) -> list[str]:
    """Every module a Python file imports."""
    modules: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules.append(node.module or "")
    return modules


def test_migrations_never_import_the_project() -> None:
    """Frozen history: a migration builds what it built when written, whatever the models say."""
    imported = {
        path.name: project
        for path in sorted((MIGRATIONS / "versions").glob("*.py"))
        if (project := [m for m in imported_modules(path) if m.split(".")[0] in PROJECT_PACKAGES])
    }
    assert imported == {}
