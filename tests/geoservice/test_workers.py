"""`servicemap serve --workers N`: every worker takes connections, and the supervisor keeps
them running and stops them all (a real server process, real sockets)."""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from geoservice.asgi import GC_THRESHOLDS
from geoservice.cli.workers import reuse_port_supported
from tests.servers import free_port, stop, wait_ready

SERVICEMAP = Path(sys.executable).with_name("servicemap")
CLIENTS = 16


def workers_of(supervisor: int) -> list[int]:
    """Pids of the supervisor's worker processes (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == supervisor and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets a process holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def accepted_inode(server_port: int, client_port: int) -> int:
    """Inode of the server side of the connection from client_port (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if local_port == server_port and remote_port == client_port:
            return int(fields[9])
    raise AssertionError(f"no server socket for client port {client_port}")


def connect_together(port: int) -> list[socket.socket]:
    """CLIENTS connections started at once (non-blocking), as devices reconnecting together."""
    clients = [socket.socket() for _ in range(CLIENTS)]
    for client in clients:
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
    for client in clients:
        select.select([], [client], [], 10)
        client.setblocking(True)
    return clients


@pytest.fixture
def server(fresh_db: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    process = subprocess.Popen(
        [str(SERVICEMAP), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env={**os.environ, "DATABASE_URL": fresh_db, "SERVICEMAP_LOG_LEVEL": "warning"},
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        yield process, port
    finally:
        stop(process)


def test_connections_opened_together_spread_over_the_workers(
    server: tuple[subprocess.Popen[bytes], int],
) -> None:
    assert reuse_port_supported()
    process, port = server
    workers = workers_of(process.pid)
    assert len(workers) == 2
    clients = connect_together(port)
    try:
        for client in clients:
            client.sendall(b"GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n")
        for client in clients:
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
        held = {pid: socket_inodes(pid) for pid in workers}
        owners = []
        for client in clients:
            inode = accepted_inode(port, client.getsockname()[1])
            owners.append(next(pid for pid, inodes in held.items() if inode in inodes))
    finally:
        for client in clients:
            client.close()
    # one shared socket let the first worker to wake accept all of them; the kernel's
    # spreading puts all 16 on one worker with probability 2 / 2**16
    assert set(owners) == set(workers), owners


def test_a_dead_worker_is_replaced_and_sigterm_stops_all(
    server: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = server
    first, second = workers_of(process.pid)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = workers_of(process.pid)
        if len(now) == 2 and first not in now:
            break
        time.sleep(0.2)
    replaced = workers_of(process.pid)
    assert second in replaced and first not in replaced and len(replaced) == 2
    wait_ready(f"http://127.0.0.1:{port}", process)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in replaced)


def test_workers_exit_when_the_supervisor_is_killed(
    server: tuple[subprocess.Popen[bytes], int],
) -> None:
    """SIGKILL gives the supervisor no chance to stop its workers: they must not go on
    serving the port as orphans."""
    process, port = server
    workers = workers_of(process.pid)
    assert len(workers) == 2
    process.kill()
    process.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    left = [pid for pid in workers if alive(pid)]
    assert not left, f"workers {left} outlived their supervisor"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_service_process_freezes_its_start_up_heap() -> None:
    """The app factory uvicorn calls leaves the start-up objects out of the collector's walks
    and the young generation collected less often (in a process of its own: freezing is for
    the process's lifetime)."""
    code = (
        "import gc, json\n"
        "from geoservice.asgi import create\n"
        "before = (gc.get_threshold(), gc.get_freeze_count())\n"
        "create()\n"
        "print(json.dumps([before, [gc.get_threshold(), gc.get_freeze_count()]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, text=True, timeout=60
    ).stdout
    (threshold_before, frozen_before), (threshold, frozen) = json.loads(out.splitlines()[-1])
    assert frozen_before == 0 and threshold_before == list(gc.get_threshold())
    assert threshold == list(GC_THRESHOLDS)
    # everything imported and built before serving: modules, routes, schemas
    assert frozen > 100_000
