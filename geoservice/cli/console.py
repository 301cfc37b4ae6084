"""Terminal output shared by CLI commands: one-line failures, progress, summary tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

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
    table(title, rows)


def table(
    title: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    console: Console | None = None,
    fold: Iterable[str] = (),
) -> None:
    """Rows as a table (columns from the first row) on `console`, stdout by default.

    Only the columns named in `fold` (free text: a reason, a value) may wrap inside their cell;
    every other cell, numbers among them, is printed whole: when those cells and a few
    characters of each folding column do not fit the width, the rows are stacked instead.
    """
    target = out if console is None else console
    rows = list(rows)
    if not rows:
        target.print(Table(title=Text(title)))
        return
    columns = [str(c) for c in rows[0]]
    cells = [["" if v is None else _cell(v) for v in row.values()] for row in rows]
    folding = {j for j, c in enumerate(columns) if c in set(fold)}
    # terminal cells, not characters: a Chinese character takes two
    widths = [
        max(cell_len(c), *(cell_len(r[j]) for r in cells if j < len(r)))
        for j, c in enumerate(columns)
    ]
    needed = [min(w, _FOLD_MIN) if j in folding else w for j, w in enumerate(widths)]
    # rich's default box: a border and a space either side of each cell
    if sum(needed) + 3 * len(needed) + 1 > target.width:
        _stacked(target, title, columns, cells)
        return
    grid = Table(title=Text(title))
    for j, column in enumerate(columns):
        number = isinstance(rows[0][column], int | float) and not isinstance(rows[0][column], bool)
        grid.add_column(
            Text(column),
            justify="right" if number else "left",
            no_wrap=j not in folding,
            overflow="fold",
            min_width=needed[j],
        )
    for row_cells in cells:
        grid.add_row(*(Text(c) for c in row_cells))
    target.print(grid)


#: characters of a folding column a table keeps before it is stacked instead
_FOLD_MIN = 12


def _cell(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _stacked(target: Console, title: str, columns: list[str], cells: list[list[str]]) -> None:
    """Rows as blocks of "name  value" lines: names never wrap, long values fold under their
    own column (numbers fit whole in any width a terminal has)."""
    target.print(Text(title), highlight=False)
    for number, row_cells in enumerate(cells):
        if number:
            target.print("")
        block = Table.grid(padding=(0, 2))
        block.add_column(no_wrap=True)
        block.add_column(overflow="fold")
        for column, value in zip(columns, row_cells, strict=False):
            block.add_row(Text(column), Text(value))
        target.print(Padding(block, (0, 0, 0, 2), expand=False))
