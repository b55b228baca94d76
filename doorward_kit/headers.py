"""Security headers on every HTTP answer of every Doorward process (OWASP API8:2023).

Doorward's HTTP answers are JSON for API clients (and, in development only, a GraphiQL page):
nothing is meant to be sniffed into HTML, framed, cached by a shared cache or sent on as a
referrer. A pure ASGI middleware: it only adds headers a route did not set itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # Answers carry personal data for one caller: no shared cache keeps them.
    (b"cache-control", b"no-store"),
)
# Only for answers that are not HTML: the development GraphiQL page loads its own scripts.
NON_HTML_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                if b"text/html" not in content_type and NON_HTML_CSP[0] not in present:
                    extra.append(NON_HTML_CSP)
                message["headers"] = headers + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)
