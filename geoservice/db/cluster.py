"""The embedded, project-local PostgreSQL + PostGIS cluster used when ``DATABASE_URL`` is unset.

Created and started on demand under ``SERVICEMAP_DB_DATA_DIR`` (git-ignored), listening on
loopback only, password-protected with a generated password kept beside the data (mode 600).
When run as root the server runs as the ``postgres`` user, since PostgreSQL refuses root.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from geoservice.settings import DatabaseSettings

SUPERUSER = "servicemap"
DEBIAN_PACKAGES = "postgresql postgresql-{major}-postgis-3"


class ClusterError(RuntimeError):
    """The embedded cluster cannot be created or started; the message says what to do."""


@dataclass(frozen=True)
class Binaries:
    """Where PostgreSQL's server programs are, and its major version."""

    bindir: Path
    major: int

    def __call__(self, name: str) -> str:
        """The path of one server program."""
        return str(self.bindir / name)


def find_binaries() -> Binaries | None:
    """The newest installed PostgreSQL server binaries (Debian layout or on PATH)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        reverse=True,
    )
    for initdb in candidates:
        if (initdb.parent / "pg_ctl").exists():
            return Binaries(initdb.parent, int(initdb.parent.parent.name))
    found = shutil.which("pg_ctl")
    if found:
        bindir = Path(found).resolve().parent
        out = subprocess.run([str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True)
        major = int(out.stdout.split()[-1].split(".")[0])
        return Binaries(bindir, major)
    return None


def postgis_installed(major: int) -> bool:
    """Whether PostGIS's extension files are installed for this server version."""
    shares = [Path(f"/usr/share/postgresql/{major}/extension")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--sharedir"], capture_output=True, text=True)
        if out.returncode == 0:
            shares.append(Path(out.stdout.strip()) / "extension")
    return any((share / "postgis.control").exists() for share in shares)


def _apt_install(packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", *packages.split()],
    ):
        result = subprocess.run(args, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ClusterError(f"`{' '.join(args)}` failed: {result.stderr.strip()[-500:]}")


def ensure_installed() -> Binaries:
    """Find PostgreSQL + PostGIS; as root on Debian/Ubuntu install them when missing."""
    binaries = find_binaries()
    major = binaries.major if binaries else 15
    if binaries and postgis_installed(major):
        return binaries
    packages = DEBIAN_PACKAGES.format(major=major)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        _apt_install(packages)
        binaries = find_binaries()
        if binaries and postgis_installed(binaries.major):
            return binaries
    raise ClusterError(
        f"PostgreSQL with PostGIS is not installed: run `sudo apt-get install {packages}` "
        "or set DATABASE_URL to a PostGIS server"
    )


class Cluster:
    """The project-local cluster described by the database settings."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.root = self._reachable_root(settings.data_dir.resolve())
        self.pgdata = self.root / "data"
        self.password_file = self.root / "password"
        self.log_file = self.root / "server.log"

    # --- who runs it ---------------------------------------------------------------------
    def _owner(self) -> pwd.struct_passwd | None:
        """The account the server runs as when we are root (PostgreSQL refuses root)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ClusterError("running as root needs a `postgres` user to run the server") from exc

    def _reachable_root(self, wanted: Path) -> Path:
        """`wanted`, unless the server account cannot reach it (a project under /root, say).

        Then the cluster lives in the server account's home, one folder per project path.
        """
        owner = self._owner()
        if owner is None:
            return wanted
        existing = wanted
        while not existing.exists():
            existing = existing.parent
        probe = ["runuser", "-u", owner.pw_name, "--", "test", "-x", str(existing)]
        if subprocess.run(probe, capture_output=True, cwd="/").returncode == 0:
            return wanted
        digest = hashlib.sha1(str(wanted).encode(), usedforsecurity=False).hexdigest()[:12]
        return Path(owner.pw_dir) / "servicemap" / digest

    def _run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        owner = self._owner()
        if owner is not None:
            args = ["runuser", "-u", owner.pw_name, "--", *args]
        result = subprocess.run(args, capture_output=True, text=True, cwd="/")
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise ClusterError(f"{Path(args[0]).name} failed: {' '.join(detail[-3:])}")
        return result

    def _chown(self, path: Path) -> None:
        owner = self._owner()
        if owner is not None:
            os.chown(path, owner.pw_uid, owner.pw_gid)

    # --- state ---------------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        """Whether the data directory holds a cluster."""
        return (self.pgdata / "PG_VERSION").exists()

    def password(self) -> str:
        """The superuser password generated when the cluster was created."""
        return self.password_file.read_text().strip()

    def url(self, database: str | None = None) -> str:
        """The connection URL of a database in this cluster."""
        name = database or self.settings.name
        return (
            f"postgresql://{SUPERUSER}:{quote(self.password(), safe='')}"
            f"@127.0.0.1:{self.settings.port}/{name}"
        )

    def running(self, binaries: Binaries) -> bool:
        """Whether the server is up (pg_ctl status)."""
        if not self.initialised:
            return False
        return (
            self._run(
                [binaries("pg_ctl"), "status", "-D", str(self.pgdata)], check=False
            ).returncode
            == 0
        )

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / f".{self.root.name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- lifecycle -----------------------------------------------------------------------
    def _init(self, binaries: Binaries) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._chown(self.root)
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password + "\n")
        os.chmod(self.password_file, 0o600)
        self._chown(self.password_file)
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)
        self._run(
            [
                binaries("initdb"),
                "-D", str(self.pgdata),
                "-U", SUPERUSER,
                "--pwfile", str(self.password_file),
                "--auth", "scram-sha-256",
                "--encoding", "UTF8",
                "--locale", "C.UTF-8",
            ]
        )  # fmt: skip

    def _start(self, binaries: Binaries) -> None:
        options = (
            f"-p {self.settings.port} -c listen_addresses=127.0.0.1 "
            "-c unix_socket_directories='' -c max_connections=200 "
            "-c shared_buffers=256MB -c fsync=on"
        )
        args = [binaries("pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.pgdata),
                "-l", str(self.log_file), "-o", options]  # fmt: skip
        if not self.log_file.exists():
            self.log_file.touch()
            self._chown(self.log_file)
        result = self._run(args, check=False)
        if result.returncode != 0 and (self.pgdata / "postmaster.pid").exists():
            # a crash can leave a pid file whose process is gone: drop it and start again
            if not self.running(binaries):
                (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
                result = self._run(args, check=False)
        if result.returncode != 0:
            tail = self.log_file.read_text(errors="replace").strip().splitlines()[-3:]
            raise ClusterError(
                f"the embedded PostgreSQL did not start on port {self.settings.port}: "
                + " | ".join(tail or [result.stderr.strip()])
            )

    def up(self) -> str:
        """Create (first time) and start the cluster, create the database; return its URL."""
        binaries = ensure_installed()
        with self._lock():
            if not self.initialised:
                self._init(binaries)
            if not self.running(binaries):
                self._start(binaries)
            self._ensure_database(self.settings.name)
        return self.url()

    def down(self) -> bool:
        """Stop the cluster; False when it was not running."""
        binaries = find_binaries()
        if binaries is None or not self.running(binaries):
            return False
        with self._lock():
            self._run([binaries("pg_ctl"), "stop", "-D", str(self.pgdata), "-m", "fast", "-w"])
        return True

    def _ensure_database(self, name: str) -> None:

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        with conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
