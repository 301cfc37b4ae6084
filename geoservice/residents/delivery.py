"""The one way codes and digests leave the service: a small ``Delivery`` interface.

Mail (``MailDelivery``, SMTP at ``SERVICEMAP_SMTP_URL``) is the channel built now; with no URL
set, ``LogDelivery`` writes codes to the server log for development and sends no digests. An
SMS gateway, what most Chinese residents expect, is another class with the same two methods.

``send_digest`` returns only once the server has accepted the message (SMTP's reply to the end
of DATA): the caller records the items as sent right after it, so an interrupted run re-sends at
most the one message whose acceptance it did not live to record.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol
from urllib.parse import unquote, urlsplit

from geoservice.residents.texts import text

logger = logging.getLogger("servicemap.residents")


@dataclass(frozen=True)
class DigestItem:
    """One feed item in a digest."""

    title: str
    kind: str
    url: str
    reason: str


@dataclass(frozen=True)
class Digest:
    """A resident's new items, in their language, with the links every digest carries."""

    address: str
    lang: str
    items: list[DigestItem]
    more: int
    page_url: str
    unsubscribe_url: str
    headers: dict[str, str] = field(default_factory=dict)


class DeliveryError(Exception):
    """The channel refused or could not be reached; nothing was accepted."""


class Delivery(Protocol):
    """Where sign-in codes and digests go."""

    def send_code(self, address: str, code: str, lang: str, ttl_s: int) -> None:
        """Send a one-time sign-in code."""

    def send_digest(self, digest: Digest) -> None:
        """Send a digest; returns once the channel has accepted it."""


def digest_text(digest: Digest) -> tuple[str, str]:
    """(subject, plain-text body) of a digest in the resident's language."""
    lang = digest.lang
    lines = [text(lang, "digest_intro"), ""]
    for item in digest.items:
        lines += [f"• {text(lang, item.kind)}: {item.title}", f"  {item.reason}", f"  {item.url}"]
    if digest.more:
        lines += ["", text(lang, "digest_more", n=digest.more, url=digest.page_url)]
    lines += ["", "--", text(lang, "digest_footer", url=digest.unsubscribe_url)]
    subject = text(lang, "digest_subject", n=len(digest.items) + digest.more)
    return subject, "\n".join(lines) + "\n"


class LogDelivery:
    """Development: codes go to the server log; digests are logged, not sent."""

    def send_code(self, address: str, code: str, lang: str, ttl_s: int) -> None:
        """Log the code (SERVICEMAP_SMTP_URL unset)."""
        logger.warning("sign-in code for %s: %s (SERVICEMAP_SMTP_URL unset)", address, code)

    def send_digest(self, digest: Digest) -> None:
        """Log that a digest would have been sent."""
        logger.info("digest of %d items for %s not sent: SERVICEMAP_SMTP_URL unset",
                    len(digest.items) + digest.more, digest.address)  # fmt: skip


class MailDelivery:
    """SMTP: ``smtp://[user:password@]host[:port]`` (STARTTLS when offered) or ``smtps://``."""

    def __init__(self, url: str, sender: str, timeout_s: float = 20.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SERVICEMAP_SMTP_URL must be smtp://host:port or smtps://host:port")
        self.tls = parts.scheme == "smtps"
        self.host = parts.hostname
        self.port = parts.port or (465 if self.tls else 25)
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout_s = timeout_s

    def _send(self, message: EmailMessage) -> None:
        try:
            if self.tls:
                context = ssl.create_default_context()
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout_s, context=context
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            with smtp:
                if not self.tls and smtp.has_extn("starttls"):
                    smtp.starttls(context=ssl.create_default_context())
                if self.user is not None:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"mail to {message['To']} not accepted: {exc}") from exc

    def _message(self, address: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = address
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        message.set_content(body)
        return message

    def send_code(self, address: str, code: str, lang: str, ttl_s: int) -> None:
        """Mail the code."""
        body = text(lang, "code_body", code=code, minutes=ttl_s // 60)
        self._send(self._message(address, text(lang, "code_subject", code=code), body))

    def send_digest(self, digest: Digest) -> None:
        """Mail the digest, with List-Unsubscribe (RFC 2369/8058)."""
        subject, body = digest_text(digest)
        message = self._message(digest.address, subject, body)
        message["List-Unsubscribe"] = f"<{digest.unsubscribe_url}>"
        for name, value in digest.headers.items():
            message[name] = value
        self._send(message)


def delivery_for(smtp_url: str | None, sender: str) -> Delivery:
    """Mail when an SMTP URL is set, else the log."""
    if smtp_url:
        return MailDelivery(smtp_url, sender)
    return LogDelivery()
