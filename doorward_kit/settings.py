"""Settings from the environment. Every name starts with DOORWARD_; nothing secret has a default."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The services that have both a gRPC and an HTTP address of their own.
ADDRESSED_SERVICES: tuple[str, ...] = ("identity", "workorders", "audit", "secrets", "traces")


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _host_of(address: str) -> str:
    """`host:port`, `[v6]:port` or `dns:///host:port` -> host."""
    rest = address.split("///", 1)[-1]
    host, _, _ = rest.rpartition(":")
    return host.strip("[]")


def grpc_target_of(addresses: list[str]) -> str:
    """One gRPC target for a list of addresses: a single address (a DNS name may resolve to
    several replicas) as is, several IP addresses as gRPC's static `ipv4:`/`ipv6:` list (the
    channel balances round-robin over them). Several host names cannot share one target."""
    if len(addresses) == 1:
        return addresses[0]
    hosts = [_host_of(a) for a in addresses]
    try:
        versions = {ipaddress.ip_address(h).version for h in hosts}
    except ValueError:
        raise ValueError(
            f"several gRPC addresses must be IP addresses ({', '.join(addresses)}); "
            "give replicas behind a host name as that one name"
        ) from None
    if len(versions) != 1:
        raise ValueError("several gRPC addresses must be all IPv4 or all IPv6")
    return f"ipv{versions.pop()}:" + ",".join(addresses)


class StackSettings(BaseSettings):
    """Where every Doorward process listens; read by every process so they can find each other."""

    model_config = SettingsConfigDict(env_prefix="DOORWARD_", extra="forbid", frozen=True)

    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    gateway_port: int = 4000
    identity_http_port: int = 4001
    identity_grpc_port: int = 5001
    workorders_http_port: int = 4002
    workorders_grpc_port: int = 5002
    audit_http_port: int = 4003
    audit_grpc_port: int = 5003
    secrets_http_port: int = 4004
    secrets_grpc_port: int = 5004
    # A port of its own for the secrets door's GET /metrics (then not served on the door, which
    # phones reach through a reverse proxy: every request there comes from the proxy's, allowed,
    # address). Unset: /metrics on secrets_http_port. deploy/k8s uses 9404 (monitoring only).
    secrets_metrics_port: int | None = None
    secrets_public_url: str | None = None
    # The URL people open the gateway (and the console) at; its origin is the console's.
    gateway_public_url: str | None = None
    # The embedded trace store's OTLP/HTTP receiver (4318 is OTLP/HTTP's registered port).
    traces_http_port: int = 4318
    # Where the others reach each service, apart from where it binds (the ports above): one
    # variable per process and protocol; unset = HOST:PORT. A comma-separated list names
    # replicas (calls are balanced over them); a single DNS name may resolve to several.
    identity_grpc_address: str | None = None
    workorders_grpc_address: str | None = None
    audit_grpc_address: str | None = None
    secrets_grpc_address: str | None = None
    identity_http_url: str | None = None
    workorders_http_url: str | None = None
    audit_http_url: str | None = None
    secrets_http_url: str | None = None
    # The trace store's read API (mutual-TLS gRPC; audit serves traces to the graph through it).
    traces_grpc_port: int = 5005
    # Where audit dials the trace store's read API, and where the store's HTTP is (unset =
    # HOST:PORT, as for the services above); Kubernetes names its Services here.
    traces_grpc_address: str | None = None
    traces_http_url: str | None = None
    # This process's certificate folder for mutual TLS on internal gRPC (doorward_kit.tls).
    tls_dir: Path | None = None
    # Development only: internal gRPC over plain TCP with the shared token below.
    insecure_internal: bool = False
    # Shared credential of the insecure mode (unused under mutual TLS).
    internal_token: SecretStr | None = None
    # Who may read GET /metrics (comma-separated CIDRs of Prometheus scrapers).
    metrics_allowed_networks: str = "127.0.0.0/8,::1/128"
    # Default deadline for internal gRPC calls, seconds.
    grpc_deadline: float = 5.0
    # The gateway's public key (PEM): subgraphs answer GraphQL only to requests it signed
    # (doorward_kit/gateway_signature.py). `doorward up` creates the pair in the data folder.
    gateway_public_key_file: Path | None = None
    # Development only, and only when set: subgraphs also answer unsigned GraphQL (whose client
    # address is then the TCP peer's, never a header's).
    allow_unsigned_graphql: bool = False
    # The largest GraphQL request body a subgraph reads (413 beyond), counted as it arrives: a
    # request with a forged signature header is read before the signature can be checked. The
    # gateway's own bodies are its plans' operations and entity representations (a few kB for
    # a board; a list of thousands of entities is some hundreds of kB).
    subgraph_max_body_bytes: int = Field(default=8_000_000, ge=1024)
    # The most connections each service opens to its PostgreSQL: opened on demand and kept (a
    # new one pays a backend's start, authentication and its statements' preparation), none
    # beyond it (a request then waits for one). They count against PostgreSQL's
    # max_connections (100 by default), shared by every service and replica: sized by the
    # operator, who knows both.
    db_pool_size: int = Field(default=20, ge=1, le=100)

    @model_validator(mode="after")
    def _unsigned_only_in_development(self) -> Self:
        if self.allow_unsigned_graphql and self.env != "development":
            raise ValueError("DOORWARD_ALLOW_UNSIGNED_GRAPHQL is for development only")
        return self

    @model_validator(mode="after")
    def _no_plain_tcp_in_production(self) -> StackSettings:
        if self.insecure_internal and self.env == "production":
            raise ValueError("DOORWARD_INSECURE_INTERNAL is refused when DOORWARD_ENV=production")
        return self

    @model_validator(mode="after")
    def _addresses_parse(self) -> Self:
        for service in ADDRESSED_SERVICES:
            grpc_target_of(self.grpc_addresses(service))
            for url in self.http_urls(service):
                if not url.startswith(("http://", "https://")):
                    raise ValueError(f"DOORWARD_{service.upper()}_HTTP_URL: {url!r} is no URL")
        return self

    def grpc_addresses(self, service: str) -> list[str]:
        """host:port of every replica of `service`'s gRPC server (one entry without replicas)."""
        configured = getattr(self, f"{service}_grpc_address", None)
        if configured:
            return _split(configured)
        return [f"{_bracketed(self.host)}:{getattr(self, f'{service}_grpc_port')}"]

    def grpc_target(self, service: str) -> str:
        """The gRPC target to dial `service` at (balanced over its replicas)."""
        return grpc_target_of(self.grpc_addresses(service))

    def http_urls(self, service: str) -> list[str]:
        """Base URL of every replica of `service`'s HTTP server."""
        configured = getattr(self, f"{service}_http_url", None)
        if configured:
            return [u.rstrip("/") for u in _split(configured)]
        port = self.gateway_port if service == "gateway" else getattr(self, f"{service}_http_port")
        return [f"http://{_bracketed(self.host)}:{port}"]

    def http_url(self, service: str) -> str:
        """The first (or only) base URL of `service`."""
        return self.http_urls(service)[0]

    def own_http_url(self, service: str) -> str:
        """Where this very process answers HTTP (its bind host and port), e.g. for readiness."""
        port = self.gateway_port if service == "gateway" else getattr(self, f"{service}_http_port")
        return f"http://{_bracketed(self.host)}:{port}"

    def address_hosts(self, service: str) -> list[str]:
        """Every host name or IP `service` is dialled at: its certificate's names."""
        hosts: list[str] = []
        if service in ADDRESSED_SERVICES:
            hosts += [_host_of(a) for a in self.grpc_addresses(service)]
        hosts += [urlsplit(u).hostname or "" for u in self.http_urls(service)]
        return list(dict.fromkeys(h for h in hosts if h))

    @property
    def secrets_base_url(self) -> str:
        return (self.secrets_public_url or self.http_url("secrets")).rstrip("/")

    @property
    def console_origin(self) -> str:
        """The console's origin: the one CORS allows by default on the gateway and secrets."""
        from doorward_kit.cors import origin_of

        return origin_of(self.gateway_public_url or self.http_url("gateway"))

    def require_internal_token(self) -> str:
        if self.internal_token is None:
            raise RuntimeError(
                "DOORWARD_INTERNAL_TOKEN is not set: services cannot talk to each other"
            )
        return self.internal_token.get_secret_value()
