"""CLI command for residents' digests: ``servicemap notify``.

The work is done by ``geoservice.residents.notify``; this adds the console conventions.
"""

from __future__ import annotations

from dataclasses import asdict

import typer

from geoservice.cli.common import migrated_database, settings
from geoservice.cli.console import fail, summary


def notify() -> None:
    """Fan new events out to residents' feeds and mail each resident their new items, once."""
    from geoservice.residents.notify import NotifyBusy, run  # the feeds' code: only here

    s = settings()
    url = migrated_database()
    try:
        result = run(url, s)
    except NotifyBusy as exc:
        fail(str(exc))
    except ValueError as exc:  # a malformed SERVICEMAP_SMTP_URL
        fail(str(exc))
    summary("notify", [asdict(result)])
    if not s.residents.smtp_url:
        typer.echo("SERVICEMAP_SMTP_URL is unset: feeds were filled, no mail was sent", err=True)
    if result.failed:
        fail(f"{result.failed} digest(s) could not be sent; run again to retry them")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the servicemap CLI."""
    app.command("notify")(notify)
