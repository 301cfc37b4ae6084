"""Streaming standbys of the embedded cluster on loopback (``servicemap db replica add|list|remove``).

A standby is made exactly as on a second machine: ``pg_basebackup -R`` from the running
primary (WAL streamed during the copy, so the copy is consistent; a physical replication slot
named after the standby, so the primary keeps the WAL the standby has not received yet;
``standby.signal`` and ``primary_conninfo`` written by ``-R``), then started as a hot standby
on its own loopback port with ``hot_standby_feedback`` (long reads are not cancelled by the
primary's vacuum). A slot holds at most ``max_slot_wal_keep_size`` of WAL (set to 2GB on the
primary when unbounded), so a standby that stays down cannot fill the primary's disk: it is
then invalidated, and made again with ``remove`` + ``add``.

Each standby lives under ``<cluster root>/standbys/<port>/`` (``data/``, ``server.log`` and a
copy of the superuser password: roles are replicated). It is named ``standby-<port>``;
its URL is the primary's with that port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row

from geoservice.db.cluster import SUPERUSER, Binaries, Cluster, ClusterError, ensure_installed

NAME_PREFIX = "standby-"
SLOT_PREFIX = "servicemap_standby_"
#: WAL a standby's slot may hold back on the primary before the standby is given up
MAX_SLOT_WAL_KEEP = "2GB"

_REPLICATION = """
SELECT application_name, state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes,
       extract(epoch FROM replay_lag)::float8 AS lag_s
  FROM pg_stat_replication
"""


@dataclass(frozen=True)
class StandbyInfo:
    """One standby as ``servicemap db replica list`` shows it."""

    name: str
    port: int
    url: str
    running: bool
    #: streaming, catchup, … (pg_stat_replication.state) or "not streaming"
    state: str
    lag_bytes: int | None
    lag_s: float | None


def standby_name(port: int) -> str:
    """The name `list` shows and `remove` takes."""
    return f"{NAME_PREFIX}{port}"


class Standbys:
    """The embedded primary's standbys on loopback."""

    def __init__(self, primary: Cluster) -> None:
        self.primary = primary
        self.home = primary.root / "standbys"

    def ports(self) -> list[int]:
        """The ports of the standbys that exist (a folder each)."""
        if not self.home.exists():
            return []
        return sorted(int(p.name) for p in self.home.iterdir() if p.name.isdigit())

    def cluster(self, port: int) -> Cluster:
        """The standby on `port`, driven like the primary (start, stop, URL)."""
        settings = self.primary.settings.model_copy(
            update={"data_dir": self.home / str(port), "port": port}
        )
        return Cluster(settings)

    # --- add ------------------------------------------------------------------------------
    def add(self, port: int | None = None) -> StandbyInfo:
        """Copy the running primary with pg_basebackup -R and start it as a streaming standby."""
        binaries = ensure_installed()
        self.primary.up()
        with self.primary._lock():
            port = port or self._free_port()
            if port in self.ports():
                raise ClusterError(f"{standby_name(port)} exists already")
            standby = self.cluster(port)
            self._prepare_dir(standby)
            try:
                self._limit_slot_wal()
                self._basebackup(binaries, standby, port)
                with open(standby.pgdata / "postgresql.auto.conf", "a") as conf:
                    conf.write("hot_standby_feedback = 'on'\n")
                standby._start(binaries)
            except (ClusterError, psycopg.Error, OSError):
                self._delete(port, binaries)
                raise
        return self.info(port)

    def _free_port(self) -> int:
        taken = {self.primary.settings.port, *self.ports()}
        for port in range(self.primary.settings.port + 1, self.primary.settings.port + 200):
            if port in taken:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
        raise ClusterError("no free loopback port for a standby")

    def _prepare_dir(self, standby: Cluster) -> None:
        for folder in (self.home, standby.root):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
            standby._chown(folder)
        shutil.copyfile(self.primary.password_file, standby.password_file)
        os.chmod(standby.password_file, 0o600)
        standby._chown(standby.password_file)

    def _limit_slot_wal(self) -> None:
        with self._primary() as conn:
            row = conn.execute("SELECT current_setting('max_slot_wal_keep_size') AS v").fetchone()
            if row is not None and row["v"] == "-1":
                conn.execute(f"ALTER SYSTEM SET max_slot_wal_keep_size = '{MAX_SLOT_WAL_KEEP}'")
                conn.execute("SELECT pg_reload_conf()")

    def _basebackup(self, binaries: Binaries, standby: Cluster, port: int) -> None:
        conninfo = (
            f"host=127.0.0.1 port={self.primary.settings.port} user={SUPERUSER} "
            f"application_name={standby_name(port)}"
        )
        args = [binaries("pg_basebackup"), "-D", str(standby.pgdata), "-R", "-X", "stream",
                "-C", "-S", f"{SLOT_PREFIX}{port}", "-c", "fast", "-d", conninfo]  # fmt: skip
        owner = standby._owner()
        if owner is not None:
            args = ["runuser", "-u", owner.pw_name, "--", *args]
        # the password goes through the environment, never the command line (ps shows that)
        env = {**os.environ, "PGPASSWORD": self.primary.password()}
        result = subprocess.run(args, capture_output=True, text=True, cwd="/", env=env)
        if result.returncode != 0:
            detail = " ".join(result.stderr.strip().splitlines()[-3:])
            raise ClusterError(f"pg_basebackup failed: {detail}")

    # --- start, stop, remove --------------------------------------------------------------
    def start_all(self) -> list[int]:
        """Start every standby that is not running (after `db up`); their ports."""
        binaries = ensure_installed()
        started = []
        for port in self.ports():
            standby = self.cluster(port)
            if standby.initialised and not standby.running(binaries):
                standby._start(binaries)
                started.append(port)
        return started

    def stop_all(self) -> list[int]:
        """Stop every running standby; their ports."""
        return [port for port in self.ports() if self.cluster(port).down()]

    def resolve(self, which: str) -> int:
        """The port of a standby named as `list` names it, by its URL, or by its port."""
        text = which.strip()
        if text.startswith(("postgresql://", "postgres://")):
            port = urlsplit(text).port
        elif text.startswith(NAME_PREFIX) and text[len(NAME_PREFIX) :].isdigit():
            port = int(text[len(NAME_PREFIX) :])
        elif text.isdigit():
            port = int(text)
        else:
            port = None
        if port is None or port not in self.ports():
            known = ", ".join(standby_name(p) for p in self.ports()) or "none"
            raise ClusterError(f"no standby {which!r}; standbys: {known}")
        return port

    def remove(self, which: str) -> int:
        """Stop and delete one standby and drop its replication slot; its port."""
        port = self.resolve(which)
        binaries = ensure_installed()
        with self.primary._lock():
            self._delete(port, binaries)
        return port

    def _delete(self, port: int, binaries: Binaries) -> None:
        standby = self.cluster(port)
        if standby.running(binaries):
            standby._run(
                # its data is deleted next: no shutdown checkpoint to wait for
                [binaries("pg_ctl"), "stop", "-D", str(standby.pgdata), "-m", "immediate", "-w"]
            )
        shutil.rmtree(standby.root, ignore_errors=True)
        if self.primary.running(binaries):
            self._drop_slot(f"{SLOT_PREFIX}{port}")

    def _drop_slot(self, slot: str) -> None:
        deadline = time.monotonic() + 10
        with self._primary() as conn:
            while True:
                try:
                    conn.execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                        " WHERE slot_name = %s",
                        (slot,),
                    )
                    return
                except psycopg.errors.ObjectInUse:
                    # its walsender is still exiting
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    # --- list -----------------------------------------------------------------------------
    def info(self, port: int, streaming: dict[str, dict[str, Any]] | None = None) -> StandbyInfo:
        """One standby: URL, whether it runs, its replication state and lag."""
        binaries = ensure_installed()
        if streaming is None:
            streaming = self._streaming()
        standby = self.cluster(port)
        row = streaming.get(standby_name(port))
        lag_s = None
        if row is not None:
            # replay_lag is NULL once a caught-up standby has nothing left to replay
            lag_s = float(row["lag_s"]) if row["lag_s"] is not None else 0.0
        return StandbyInfo(
            name=standby_name(port),
            port=port,
            url=standby.url(),
            running=standby.running(binaries),
            state=str(row["state"]) if row is not None else "not streaming",
            lag_bytes=None if row is None or row["lag_bytes"] is None else int(row["lag_bytes"]),
            lag_s=lag_s,
        )

    def list(self) -> list[StandbyInfo]:
        """Every standby, in port order."""
        streaming = self._streaming()
        return [self.info(port, streaming) for port in self.ports()]

    def _streaming(self) -> dict[str, dict[str, Any]]:
        """pg_stat_replication of the primary by application name (empty when it is down)."""
        binaries = ensure_installed()
        if not self.primary.initialised or not self.primary.running(binaries):
            return {}
        with self._primary() as conn:
            return {r["application_name"]: r for r in conn.execute(_REPLICATION).fetchall()}

    @contextlib.contextmanager
    def _primary(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        with psycopg.connect(
            self.primary.url("postgres"), autocommit=True, row_factory=dict_row, connect_timeout=10
        ) as conn:
            yield conn
