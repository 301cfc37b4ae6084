"""What the residents' tests share: a real SMTP server (aiosmtpd) and signing up through it."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient


@dataclass
class Mailbox:
    """Messages the SMTP server accepted (250 sent), and an optional hook before accepting."""

    accepted: list[EmailMessage] = field(default_factory=list)
    #: called with the message before the reply; returns the SMTP reply to send, or None (250)
    before_reply: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """aiosmtpd's hook: keep the message, then answer."""
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        if self.before_reply is not None:
            reply = await self.before_reply(message)
            if reply is not None:
                return str(reply)
        with self.lock:
            self.accepted.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        """The accepted messages to one address."""
        with self.lock:
            return [m for m in self.accepted if m["To"] == address]

    def code_for(self, address: str) -> str:
        """The code in the latest sign-in mail to `address`."""
        body = self.to(address)[-1].get_body(("plain",))
        assert body is not None
        found = re.search(r"\b(\d{6})\b", body.get_content())
        assert found, "no 6-digit code in the mail"
        return found.group(1)


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, str]]:
    """A running SMTP server on loopback: (its mailbox, smtp:// URL)."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


def sign_up(client: TestClient, mailbox: Mailbox, email: str, lang: str = "zh-Hans") -> str:
    """A resident token for `email` (account made with consent), through the real mail."""
    answer = client.post("/api/v1/residents/sign-in", json={"email": email, "lang": lang})
    assert answer.status_code == 202, answer.text
    code = mailbox.code_for(email)
    verified = client.post(
        "/api/v1/residents/verify",
        json={"email": email, "code": code, "consent": True, "lang": lang},
    )
    assert verified.status_code == 200, verified.text
    client.cookies.clear()
    return str(verified.json()["token"])


def bearer(token: str) -> dict[str, str]:
    """Authorization header of a resident token."""
    return {"Authorization": f"Bearer {token}"}
