"""CLI commands for web (filled in by its issue)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

#: steps `servicemap demo` runs after loading the sample facilities: (connection, catalogue path)
DEMO_STEPS: list[Callable[[Any, Path], None]] = []


def register(app: typer.Typer) -> None:
    """Add this module's commands to the servicemap CLI."""
