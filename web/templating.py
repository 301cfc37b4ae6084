"""The one Jinja environment of the web pages (web/templates): autoescaped, strict.

Every page renders through ``render``: HTML autoescaping is on for every template (values are
text unless a template marks them otherwise), an undefined name is an error rather than an
empty string, and block tags on lines of their own leave no blank lines behind
(``trim_blocks``, ``lstrip_blocks``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def http_url(value: Any) -> str | None:
    """The value when it is an absolute http(s) URL, else None (never a javascript: link)."""
    text = str(value or "").strip()
    return text if text.lower().startswith(("http://", "https://")) else None


environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["http_url"] = http_url


def render(template: str, **context: Any) -> str:
    """A template of web/templates rendered with `context`."""
    return environment.get_template(template).render(**context)
