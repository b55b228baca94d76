"""Gateway settings (DOORWARD_GATEWAY_*); where the subgraphs live comes from StackSettings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from doorward_kit.settings import StackSettings
from gateway.client_address import Network, parse_trusted_proxies

# The Doorward subgraphs, in composition order.
DOORWARD_SUBGRAPHS = ("identity", "workorders", "audit")


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOORWARD_GATEWAY_", extra="forbid")

    stack: StackSettings = Field(default_factory=StackSettings)
    port: int | None = None  # default: DOORWARD_GATEWAY_PORT via StackSettings
    # name -> URL; empty means the Doorward subgraphs at their StackSettings ports.
    subgraphs: dict[str, str] = Field(default_factory=dict)
    supergraph_file: str | None = None
    auth_enabled: bool = True
    introspection: bool | None = None  # default: on in development only
    graphiql: bool | None = None  # default: on in development only
    subgraph_timeout: float = 5.0
    startup_timeout: float = 30.0  # how long to retry fetching subgraph SDLs at start
    plan_cache_size: int = 1000
    # Progressive @override labels switched on (`percent(N)` labels are drawn per request).
    override_labels: list[str] = Field(default_factory=list)
    max_body_bytes: int = 1_000_000
    max_batch: int = 10
    max_depth: int = 15
    max_aliases: int = 30
    max_fields: int = 500
    max_cost: int = 10_000
    default_list_size: int = 10  # cost multiplier for a list field without `first`/`last`
    max_directives: int = 50
    max_tokens: int = 5_000  # lexical tokens of one document (comments counted apart, same cap)
    max_document_chars: int = 100_000
    # Tokens of a document sent without a valid token (only login/refresh run): these need few.
    anonymous_max_tokens: int = 200
    trusted_documents: str | None = None  # allow-list file: only these documents run
    # Automatic persisted queries (Apollo protocol), kept in memory: 0 entries switches them off.
    persisted_queries_max_entries: int = Field(default=2_000, ge=0)
    persisted_queries_max_chars: int = Field(default=4_000_000, ge=0)
    rate_limit_per_second: float = 50.0  # per user (or per client address when anonymous)
    rate_limit_burst: int = 100
    # How many gateways share the rate limit above (each enforces its share of it).
    replicas: int = Field(default=1, ge=1)
    # A DNS name resolving to every live gateway (Kubernetes: a headless Service): the share
    # follows its count (gateway/replica_count.py); `replicas` is then only the first guess.
    peers_dns: str | None = None
    max_connections: int = 32  # pooled connections per subgraph
    # A port of its own for GET /metrics (then not served on `port`, where a reverse proxy
    # would relay anyone's request from its own, allowed, address). Unset: /metrics on `port`.
    metrics_port: int | None = None
    # A port of its own where every connection starts with a PROXY protocol v1 line naming the
    # client (a TCP balancer in front, e.g. `doorward up --replicas`), accepted only from the
    # peers in `proxy_protocol_from` (comma-separated CIDRs). Unset: no such port.
    proxy_protocol_port: int | None = None
    proxy_protocol_from: str = ""
    # Reverse proxies in front of the gateway (comma-separated CIDRs): only their
    # X-Forwarded-For is read; anyone else's is discarded.
    trusted_proxies: str = ""
    # The gateway's own Ed25519 key (PEM): it signs every subgraph request, which subgraphs
    # require (they hold the public key). Unset: requests go unsigned.
    signing_key_file: Path | None = None
    # The built console (web/dist); default: web/dist of this checkout.
    console_dir: str | None = None
    # Comma-separated origins allowed to call /graphql from a browser; unset: the console's.
    cors_origins: str | None = None

    @field_validator("trusted_proxies", "proxy_protocol_from")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        parse_trusted_proxies(value)
        return value

    @property
    def trusted_networks(self) -> tuple[Network, ...]:
        return parse_trusted_proxies(self.trusted_proxies)

    @property
    def development(self) -> bool:
        return self.stack.env == "development"

    @property
    def introspection_enabled(self) -> bool:
        return self.development if self.introspection is None else self.introspection

    @property
    def graphiql_enabled(self) -> bool:
        return self.development and (self.graphiql is None or self.graphiql)

    @property
    def listen_port(self) -> int:
        return self.port if self.port is not None else self.stack.gateway_port

    def subgraph_urls(self) -> dict[str, str]:
        """name -> the URL to fetch its SDL from (the first replica's)."""
        return {name: urls[0] for name, urls in self.subgraph_replicas().items()}

    def subgraph_replicas(self) -> dict[str, list[str]]:
        """name -> every replica's GraphQL URL (a `subgraphs` value may list several,
        comma-separated); the gateway balances over them."""
        if self.subgraphs:
            return {
                name: [u.strip() for u in value.split(",") if u.strip()]
                for name, value in self.subgraphs.items()
            }
        return {
            name: [f"{url}/graphql" for url in self.stack.http_urls(name)]
            for name in DOORWARD_SUBGRAPHS
        }
