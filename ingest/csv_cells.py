"""CSV cells safe to open in a spreadsheet, and read back unchanged.

A spreadsheet runs a cell beginning with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage
return) as a formula (CSV injection, OWASP). Our exports prefix such a text cell with an
apostrophe, the spreadsheet's own "this is text" mark; the CSV reader removes it again. So
that the pair is exact for every text, a cell that already begins with apostrophes followed by
one of those characters gets one more apostrophe, and reading removes exactly one:
``=1+1`` → ``'=1+1`` → ``=1+1`` and ``'=1+1`` → ``''=1+1`` → ``'=1+1``.
"""

from __future__ import annotations

import re

import pandas as pd

#: what makes a spreadsheet read a cell as a formula
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PROTECTED = re.compile(r"^'+[=+\-@\t\r]")


def protect(text: str) -> str:
    """The cell as written: a leading apostrophe when a spreadsheet would run it."""
    if text.startswith(FORMULA_START) or _PROTECTED.match(text):
        return "'" + text
    return text


def unprotect(text: str) -> str:
    """The cell as it was before `protect`."""
    return text[1:] if _PROTECTED.match(text) else text


def unprotect_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`unprotect` every text cell of a CSV chunk read as strings (only cells that need it)."""
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object and not pd.api.types.is_string_dtype(values.dtype):
            continue
        marked = values.str.match(_PROTECTED.pattern, na=False)
        if bool(marked.any()):
            frame[column] = values.where(~marked, values.str.slice(1))
    return frame
