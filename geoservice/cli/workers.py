"""Serve with several worker processes, each accepting on a listening socket of its own.

uvicorn's ``--workers`` shares one listening socket: every worker's event loop wakes when
connections arrive and the first accepts all of them at once. Clients that connect together
(sensors reconnecting after a restart, a proxy's keep-alive pool, a load generator) then all
stay on one worker while the others idle. Here the supervisor opens one socket per worker
with SO_REUSEPORT, all listening before any worker starts, and the kernel spreads connections
over them (a connection to a worker still starting waits in its socket's queue).

The supervisor restarts a worker that dies (on the same socket) and stops them all on SIGINT
or SIGTERM.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

logger = logging.getLogger("servicemap")

APP = "geoservice.asgi:create"
#: how long stopping waits for a worker to finish its requests before killing it (seconds)
STOP_TIMEOUT_S = 30.0
#: pause before starting a worker again, so a worker that cannot start does not spin
RESTART_DELAY_S = 1.0
#: pending connections per socket
BACKLOG = 2048

# sockets are handed to the spawned workers
multiprocessing.allow_connection_pickling()


def reuse_port_supported() -> bool:
    """Whether this platform can spread connections over several listening sockets."""
    return hasattr(socket, "SO_REUSEPORT")


def _listener(host: str, port: int) -> socket.socket:
    """A socket bound to host:port that other sockets can bind too (SO_REUSEPORT)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _die_with(supervisor: int) -> None:
    """Have this process sent SIGTERM when the supervisor dies, even killed by SIGKILL, so no
    orphaned worker goes on serving the port (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the call took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(sock: socket.socket, log_level: str, supervisor: int) -> None:
    """One worker process: one uvicorn server on its own socket."""
    _die_with(supervisor)
    config = uvicorn.Config(
        APP, factory=True, log_level=log_level, proxy_headers=True, backlog=BACKLOG
    )
    uvicorn.Server(config).run(sockets=[sock])


def serve(host: str, port: int, workers: int, log_level: str) -> None:
    """Serve the app on host:port until SIGINT or SIGTERM: in this process for one worker,
    else in `workers` processes with a socket each (uvicorn's shared socket where the
    platform lacks SO_REUSEPORT)."""
    if workers == 1 or not reuse_port_supported():
        uvicorn.run(
            APP, factory=True, host=host, port=port, workers=workers, log_level=log_level,
            proxy_headers=True,
        )  # fmt: skip
        return
    sockets: list[socket.socket] = []
    try:
        for _ in range(workers):
            sockets.append(_listener(host, port))
            sockets[-1].listen(BACKLOG)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start(i: int) -> BaseProcess:
        process = context.Process(
            target=_worker,
            args=(sockets[i], log_level, os.getpid()),
            name=f"servicemap-worker-{i}",
        )
        process.start()
        return process

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes = [start(i) for i in range(workers)]
    try:
        while not stopping.wait(0.5):
            for i, process in enumerate(processes):
                if not process.is_alive() and not stopping.is_set():
                    logger.warning(
                        "worker %s exited with code %s; starting another",
                        process.pid,
                        process.exitcode,
                    )
                    time.sleep(RESTART_DELAY_S)
                    processes[i] = start(i)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for sock in sockets:
            sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
