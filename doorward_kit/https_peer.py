"""The calling service of a mutual-TLS HTTP request, from its verified client certificate.

gRPC servers learn their caller from the peer certificate (doorward_kit.tls.peer_service);
an HTTPS server of the kit (runner `http_tls`) gets the same here: uvicorn's protocol is
subclassed so that each connection's ASGI scopes carry the service its certificate names
(URI SAN `spiffe://doorward/<svc>`), under PEER_SERVICE_KEY. The handshake has verified the
chain against the Doorward CA (CERT_REQUIRED) before the first request is read, so the name is
proven, unlike anything the request itself says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from doorward_kit.tls import service_from_spiffe

PEER_SERVICE_KEY = "doorward.peer_service"

_Scope = MutableMapping[str, Any]
_Asgi = Callable[[_Scope, Any, Any], Awaitable[None]]


def service_of_certificate(cert: dict[str, Any] | None) -> str | None:
    """The one Doorward service a verified peer certificate (ssl's getpeercert()) names."""
    names = {
        service_from_spiffe(value)
        for kind, value in (cert or {}).get("subjectAltName", ())
        if kind == "URI"
    }
    names.discard(None)
    return names.pop() if len(names) == 1 else None


def peer_service_of(scope: MutableMapping[str, Any]) -> str | None:
    """The verified calling service of a request (None: plain HTTP or no Doorward name)."""
    value = scope.get(PEER_SERVICE_KEY)
    return value if isinstance(value, str) else None


class _WithPeer:
    def __init__(self, app: _Asgi, service: str | None) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        # Set (or cleared) by the server for every request: a scope never carries it otherwise.
        scope[PEER_SERVICE_KEY] = self.service
        await self.app(scope, receive, send)


def peer_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class, telling the app each connection's certificate's service
    (uvicorn.Config(http=peer_protocol()))."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class PeerProtocol(AutoHTTPProtocol):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            cert = ssl_object.getpeercert() if ssl_object is not None else None
            # uvicorn's protocols call `self.app` for each request of the connection.
            protocol: Any = self
            protocol.app = _WithPeer(protocol.app, service_of_certificate(cert))

    return PeerProtocol
