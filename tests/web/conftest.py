"""Fixtures for page tests: a real uvicorn server per database and a real headless Chromium.

- ``serving(settings)``: a context manager serving the app while it runs (its base URL).
- ``start_server(settings)``: serve the app for these settings in a background thread; returns
  its base URL (stopped at the end of the session).
- ``live_server``: base URL of a server over the session's ``sample_db``.
- ``resident_site``: (base URL, database URL, mailbox) of a server over a fresh sample district
  that mails sign-in codes through a real SMTP server (one per test module).
- ``browser``: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.
- ``offline_page``: a fresh page that may reach only localhost, recording console errors.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Route, sync_playwright

from geoservice.app import create_app
from geoservice.settings import Settings
from tests.conftest import load_sample, settings_for
from tests.geoservice.residents_support import Mailbox, smtp_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        """Leave signals to pytest: this server runs in a thread."""


def _serve(settings: Settings) -> tuple[str, _Server, threading.Thread]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """Serve the app for these settings on a free loopback port while the block runs: its URL."""
    url, server, thread = _serve(settings)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def start_server() -> Iterator[Callable[[Settings], str]]:
    """Factory: serve the app for given settings on a free loopback port; returns the base URL."""
    running: list[tuple[_Server, threading.Thread]] = []

    def start(settings: Settings) -> str:
        url, server, thread = _serve(settings)
        running.append((server, thread))
        return url

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(sample_db: str, start_server: Callable[[Settings], str]) -> str:
    """Base URL of a real HTTP server over the sample district."""
    return start_server(settings_for(sample_db))


@pytest.fixture(scope="module")
def resident_site(
    make_db: Callable[[], str], sample_dir: Path, start_server: Callable[[Settings], str]
) -> Iterator[tuple[str, str, Mailbox]]:
    """(base URL, database URL, mailbox) of a server mailing through a test SMTP server."""
    url = make_db()
    load_sample(url, sample_dir)
    with smtp_server() as (mailbox, smtp_url):
        settings = settings_for(url)
        settings.residents = settings.residents.model_copy(update={"smtp_url": smtp_url})
        yield start_server(settings), url, mailbox


@pytest.fixture(scope="session")
def playwright_session() -> Iterator[Playwright]:
    """The Playwright driver for the session."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_session: Playwright) -> Iterator[Browser]:
    """Headless Chromium from Debian (Playwright's own download is not used)."""
    chromium = playwright_session.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


def is_local(url: str) -> bool:
    """Whether a URL points at this machine (or is inline data)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.hostname in LOCAL_HOSTS


@dataclass
class OfflinePage:
    """A page that may only reach localhost, with what went wrong on it."""

    page: Page
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def errors(self) -> list[str]:
        """Console and script errors, except failed loads of requests the test itself blocked."""
        return self.page_errors + self.console_errors


def open_offline_page(browser: Browser, **context_options: object) -> OfflinePage:
    """A new context + page with every non-local request aborted and errors recorded."""
    context = browser.new_context(**context_options)  # type: ignore[arg-type]
    page = context.new_page()
    offline = OfflinePage(page)

    def guard(route: Route) -> None:
        if is_local(route.request.url):
            route.continue_()
        else:
            offline.blocked.append(route.request.url)
            route.abort()

    def on_console(message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        source = message.location.get("url", "")
        # the base-map tiles we blocked on purpose fail to load: that is the offline case
        if message.text.startswith("Failed to load resource") and not is_local(source):
            return
        offline.console_errors.append(f"{message.text} ({source})")

    context.route("**/*", guard)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: offline.page_errors.append(str(exc)))
    return offline


@pytest.fixture
def offline_page(browser: Browser) -> Iterator[OfflinePage]:
    """A phone-agnostic page that can reach only localhost."""
    offline = open_offline_page(browser, viewport={"width": 1280, "height": 800})
    yield offline
    offline.page.context.close()


def settled(page: Page) -> None:
    """Wait until the map has started and no API request is in flight."""
    # selectors, not wait_for_function: the page's CSP forbids the eval that one needs
    page.wait_for_selector('body.sm-ready[data-pending="0"]')
