"""Settings from the environment. Every name starts with DOORWARD_; nothing secret has a default."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    secrets_public_url: str | None = None
    # The URL people open the gateway (and the console) at; its origin is the console's.
    gateway_public_url: str | None = None
    # The embedded trace store's OTLP/HTTP receiver (4318 is OTLP/HTTP's registered port).
    traces_http_port: int = 4318
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

    def grpc_target(self, service: str) -> str:
        return f"{self.host}:{getattr(self, f'{service}_grpc_port')}"

    def http_url(self, service: str) -> str:
        port = self.gateway_port if service == "gateway" else getattr(self, f"{service}_http_port")
        return f"http://{self.host}:{port}"

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
