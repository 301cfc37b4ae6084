"""``servicemap db replica add|list|remove``: streaming standbys of the embedded cluster.

The work is done by ``geoservice.db.standbys``; the service reads from the standbys named in
``SERVICEMAP_DATABASE_READ_URLS`` (``list --urls`` prints that value).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from geoservice.cli.common import settings
from geoservice.cli.console import err, fail, out
from geoservice.db.cluster import Cluster, ClusterError
from geoservice.db.connection import mask_url
from geoservice.db.standbys import StandbyInfo, Standbys

app = typer.Typer(
    help="Streaming standbys of the embedded cluster on loopback (reads scale out on them).",
    no_args_is_help=True,
)


def standbys() -> Standbys:
    """The embedded cluster's standbys; fails when DATABASE_URL points elsewhere."""
    s = settings()
    if s.db.url:
        fail(
            "DATABASE_URL is set: standbys of an external server are made on their own machines "
            "(docs/scale-out.md); `db replica` manages the embedded cluster's"
        )
    cluster = Cluster(s.db)
    if not cluster.initialised:
        fail("the embedded cluster does not exist yet: run `servicemap db up`")
    return Standbys(cluster)


def _url(url: str) -> str:
    return mask_url(url) if os.environ.get("SERVICEMAP_MASK_URL") else url


def _line(info: StandbyInfo) -> str:
    lag = "lag unknown"
    if info.lag_s is not None:
        lag = f"lag {info.lag_s:.3f} s, {info.lag_bytes or 0:,} bytes"
    state = info.state if info.running else "stopped"
    return f"{info.name}\t{_url(info.url)}\t{state}\t{lag}"


@app.command("add")
def add(
    port: Annotated[
        int | None,
        typer.Option(help="loopback port (default: the next free one)", min=1024, max=65535),
    ] = None,
) -> None:
    """Make a standby with pg_basebackup -R, start it streaming; print its URL."""
    group = standbys()
    with err.status("copying the primary (pg_basebackup)"):
        try:
            info = group.add(port)
        except ClusterError as exc:
            fail(str(exc))
    out.print(_url(info.url), soft_wrap=True, highlight=False)
    urls = ",".join(i.url for i in group.list())
    err.print(
        f"{info.name} is streaming; reads use it with SERVICEMAP_DATABASE_READ_URLS={urls}",
        soft_wrap=True,
        highlight=False,
    )


@app.command("list")
def list_(
    urls: Annotated[
        bool, typer.Option("--urls", help="print only the URLs, comma-separated")
    ] = False,
) -> None:
    """Each standby: name, postgresql:// URL, replication state and lag behind the primary."""
    group = standbys()
    infos = group.list()
    if urls:
        out.print(",".join(_url(i.url) for i in infos), soft_wrap=True, highlight=False)
        return
    for info in infos:
        typer.echo(_line(info))  # tab-separated, as printed (rich would expand the tabs)
    err.print(f"{len(infos)} standby(s)")


@app.command("remove")
def remove(
    standby: Annotated[str, typer.Argument(help="as `list` names it (standby-PORT), or its URL")],
) -> None:
    """Stop a standby, delete its data and drop its replication slot on the primary."""
    group = standbys()
    try:
        port = group.remove(standby)
    except ClusterError as exc:
        fail(str(exc))
    err.print(f"removed standby-{port}")
