"""Terminal output shared by CLI commands: one-line failures, progress, summary tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line reason on stderr and exit non-zero."""
    # the reason is plain text: "[geometry] crs" is a mapping's section, not markup
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def progress() -> Progress:
    """A progress bar on stderr (hidden when stderr is not a terminal)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


def summary(title: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """A summary table on stdout: one row per mapping, columns from the first.

    Numbers are never cut: when the table is wider than the terminal (or a log's 80 columns),
    each row is printed stacked instead, one "name  value" line per column.
    """
    rows = list(rows)
    table = Table(title=title)
    if not rows:
        out.print(table)
        return
    columns = [str(c) for c in rows[0]]
    cells = [["" if v is None else _cell(v) for v in row.values()] for row in rows]
    widths = [max(len(c), *(len(r[j]) for r in cells if j < len(r))) for j, c in enumerate(columns)]
    # rich's default box: a border and a space either side of each cell
    if sum(widths) + 3 * len(widths) + 1 > out.width:
        _stacked(title, columns, cells)
        return
    for column in rows[0]:
        table.add_column(
            str(column),
            justify="right" if isinstance(rows[0][column], int | float) else "left",
            no_wrap=True,
        )
    for row_cells in cells:
        table.add_row(*row_cells)
    out.print(table)


def _cell(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _stacked(title: str, columns: list[str], cells: list[list[str]]) -> None:
    """Rows as blocks of "name  value" lines: as narrow as the longest name and value."""
    width = max(len(c) for c in columns)
    out.print(title, soft_wrap=True, highlight=False, markup=False)
    for number, row_cells in enumerate(cells):
        if number:
            out.print("")
        for column, value in zip(columns, row_cells, strict=False):
            out.print(
                f"  {column:<{width}}  {value}", soft_wrap=True, highlight=False, markup=False
            )
