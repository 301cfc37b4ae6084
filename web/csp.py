"""Scripts in the pages' Content-Security-Policy: this site's files, and each inline script by hash.

Pages set their policy with ``script-src 'self'`` (``web.routes.content_security_policy``): no
``'unsafe-inline'``, so markup that slips into a page cannot run. The inline scripts the pages
carry themselves (the Folium map's set-up, the facility page's small map, the staff view) are
allowed one by one: ``InlineScriptHashes`` reads each HTML response that has a policy, hashes
every inline ``<script>`` it holds (SHA-256 of its text, as browsers compute it) and adds those
hashes to ``script-src``. Hashes rather than nonces: the body is unchanged, so pages stay
cacheable (a nonce in a cached page would be a nonce everyone knows).
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: one script element: its attributes and its text up to the first "</script" (as HTML parses)
_SCRIPT = re.compile(rb"<script\b([^>]*)>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
_SRC = re.compile(rb"\ssrc\s*=", re.IGNORECASE)
_SCRIPT_SRC = re.compile(r"(^|;)(\s*script-src\b)([^;]*)", re.IGNORECASE)


def inline_script_hashes(html: bytes) -> list[str]:
    """CSP source expressions ('sha256-…') of the inline scripts of an HTML document, in order."""
    found: list[str] = []
    for match in _SCRIPT.finditer(html):
        attributes, text = match.group(1), match.group(2)
        if _SRC.search(b" " + attributes):
            continue  # an external script: 'self' covers it
        # the HTML parser turns CR LF and lone CR into LF before the browser hashes the text
        text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        digest = base64.b64encode(hashlib.sha256(text).digest()).decode()
        expression = f"'sha256-{digest}'"
        if expression not in found:
            found.append(expression)
    return found


def with_script_hashes(policy: str, hashes: list[str]) -> str:
    """The policy with these hashes added to its script-src (one made from default-src if none)."""
    if not hashes:
        return policy
    extra = " " + " ".join(hashes)
    if _SCRIPT_SRC.search(policy):
        return _SCRIPT_SRC.sub(lambda m: m.group(1) + m.group(2) + m.group(3) + extra, policy, 1)
    return f"{policy.rstrip('; ')}; script-src 'self'{extra}"


class InlineScriptHashes:
    """Add the hashes of a page's inline scripts to the script-src of its policy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass responses through; hold an HTML response with a policy until its body is whole."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def hashing_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                html = headers.get(b"content-type", b"").startswith(b"text/html")
                if html and b"content-security-policy" in headers:
                    start = message
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            hashes = inline_script_hashes(body)
            rewritten: list[tuple[bytes, bytes]] = []
            for name, value in start.get("headers", []):
                if name.lower() == b"content-security-policy":
                    value = with_script_hashes(value.decode("latin-1"), hashes).encode("latin-1")
                rewritten.append((name, value))
            await send({**start, "headers": rewritten})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, hashing_send)
