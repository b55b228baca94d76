"""`doorward up`: run the whole stack on one machine, in the foreground, from one data folder.

Order: PostgreSQL, OpenBao, then the processes in waves (WAVES): identity first (the others
verify tokens with its JWKS and ask its gRPC), then audit, secrets and workorders together (none
needs another to become ready), then the gateway, which composes the subgraphs. Each wave is
spawned at once and waited for on every member's /readyz. Stop order is the reverse: processes
last started first, then OpenBao, then PostgreSQL.

Decision: when any process dies (a service, OpenBao or PostgreSQL), the supervisor reports it
by name and stops the whole stack with exit code 1 rather than restarting it. A half-running
stack hides the failure (requests fail in odd places) and a restart loop hides it longer;
stopping loudly keeps `make up` honest. Use a real process manager (systemd, Kubernetes) for
restart policies in production.

The pure parts (configuration, environment of each child, port plan, output) are functions
without side effects so they can be unit-tested; `Supervisor` does the processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

import httpx

from deploy.balancer import TcpBalancer
from deploy.embedded import (
    AppRoleCreds,
    EmbeddedOpenBao,
    EmbeddedPostgres,
    _write_private,
    database_url,
    die_with_parent,
    pid_alive,
    provision_backup_role,
    provision_fingerprint,
    provision_vault,
    stop_pid,
)
from deploy.errors import DeployError
from deploy.pgroles import login_url, provision_service_databases, read_or_create_password
from deploy.pki import (
    CertificateIssuer,
    CertificateRenewer,
    all_hosts,
    provision_pki,
    service_hosts,
)
from doorward_kit.gateway_signature import create_key_pair
from doorward_kit.net import port_in_use
from doorward_kit.settings import StackSettings
from doorward_kit.tls import SERVICES as TLS_PROCESSES

SERVICES: tuple[str, ...] = ("identity", "audit", "secrets", "workorders")
# Start order: each wave starts together and is ready before the next one starts.
WAVES: tuple[tuple[str, ...], ...] = (
    ("identity",),
    ("audit", "secrets", "workorders"),
    ("gateway",),
)
# The embedded trace store: an HTTP-only process with its own database, started unless the
# standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT names an external collector.
TRACES = "traces"
DATABASES: dict[str, str] = {svc: f"doorward_{svc}" for svc in (*SERVICES, TRACES)}
_OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# The services that serve a GraphQL subgraph to the gateway.
GRAPHQL_SUBGRAPHS = ("identity", "workorders", "audit")
# Never handed to a service: the supervisor's own credentials, and the backup archive key (an
# operator running `doorward backup` from the same environment must not hand every process, the
# internet-facing gateway included, the key of archives holding all credentials).
_SUPERVISOR_ONLY = ("DOORWARD_VAULT_TOKEN", "DOORWARD_DATABASE_URL", "DOORWARD_BACKUP_KEY")
MAX_REPLICAS = 9
# Replica r of a process binds its configured port + r * REPLICA_PORT_STEP (r = 1..N).
REPLICA_PORT_STEP = 100


def replica_port(base: int, replica: int) -> int:
    return base + REPLICA_PORT_STEP * replica


# A gateway replica's PROXY-protocol port (the balancer's way in): its own port plus this.
PROXY_PORT_OFFSET = 50


def proxy_protocol_port(gateway_port: int, replica: int) -> int:
    return replica_port(gateway_port, replica) + PROXY_PORT_OFFSET


# The secrets door's /metrics port under `up`, unless DOORWARD_SECRETS_METRICS_PORT names one:
# its HTTP port plus this (each replica then adds its own REPLICA_PORT_STEP).
SECRETS_METRICS_OFFSET = 50


def balancer_source(host: str) -> str:
    """The address the door balancer's connections to the replicas come from (it dials `host`;
    an unspecified bind address is dialled as loopback)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # a name: `up` runs on one machine, its balancer dials loopback
        return "127.0.0.1/32"
    if ip.is_unspecified:
        ip = ipaddress.ip_address("127.0.0.1" if ip.version == 4 else "::1")
    return str(ipaddress.ip_network(ip))


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class UpConfig:
    """Everything `doorward up` reads from the environment (see env_names())."""

    data_dir: Path
    stack: StackSettings
    # repr=False: these may carry a password or a token; a repr must never show them.
    database_url: str | None = field(repr=False)
    vault_addr: str | None
    vault_token: str | None = field(repr=False)
    vault_role_id: str | None
    vault_secret_id: str | None = field(repr=False)
    vault_port: int
    ready_timeout: float
    # Lifetime of the service certificates `up` issues (renewed at 2/3 of it), seconds.
    tls_cert_ttl: float = 86400.0
    # False when an external OTLP collector is configured: then no trace store is started.
    embedded_traces: bool = True
    # DOORWARD_SHRED_LEDGER; None = shred_ledger_default(data_dir).
    shred_ledger_file: Path | None = None

    @property
    def shred_ledger(self) -> Path:
        return self.shred_ledger_file or shred_ledger_default(self.data_dir)
    # `up --replicas N`: processes of every service and of the gateway (the trace store stays one).
    replicas: int = 1
    # `up --vault-nodes M`: nodes of the embedded OpenBao raft cluster.
    vault_nodes: int = 1

    @property
    def waves(self) -> tuple[tuple[str, ...], ...]:
        """WAVES, with the trace store starting beside identity when it is embedded."""
        if not self.embedded_traces:
            return WAVES
        return ((TRACES, *WAVES[0]), *WAVES[1:])

    @property
    def traces_endpoint(self) -> str:
        return self.stack.http_url(TRACES)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> UpConfig:
        def get(name: str) -> str | None:
            return env.get(name) or None

        try:
            stack = StackSettings.model_validate(_stack_kwargs(env))
            if stack.secrets_metrics_port is None:
                # The door is where phones come in, often through a reverse proxy on this
                # machine (or `--replicas`' balancer): from there every request is loopback's,
                # an allowed scraper. /metrics gets a port of its own that no proxy relays.
                port = stack.secrets_http_port + SECRETS_METRICS_OFFSET
                stack = stack.model_copy(update={"secrets_metrics_port": port})
            vault_port = int(env.get("DOORWARD_VAULT_PORT", "8200"))
            ready_timeout = float(env.get("DOORWARD_READY_TIMEOUT", "90"))
            tls_cert_ttl = float(env.get("DOORWARD_TLS_CERT_TTL", "86400"))
            if not 2 <= tls_cert_ttl <= 30 * 86400:
                raise ValueError("DOORWARD_TLS_CERT_TTL must be 2 seconds to 30 days")
            replicas = int(env.get("DOORWARD_REPLICAS", "1"))
            if not 1 <= replicas <= MAX_REPLICAS:
                raise ValueError(f"DOORWARD_REPLICAS must be 1 to {MAX_REPLICAS}")
            vault_nodes = int(env.get("DOORWARD_VAULT_NODES", "1"))
            if vault_nodes not in (1, 3, 5):
                raise ValueError("DOORWARD_VAULT_NODES must be 1, 3 or 5 (a raft quorum)")
        except ValueError as exc:
            first = str(exc).splitlines()[0:3]
            raise DeployError("bad DOORWARD_* setting: " + " ".join(first)) from exc
        return cls(
            data_dir=Path(env.get("DOORWARD_DATA_DIR", ".doorward")).expanduser().resolve(),
            stack=stack,
            database_url=get("DOORWARD_DATABASE_URL"),
            vault_addr=get("DOORWARD_VAULT_ADDR"),
            vault_token=get("DOORWARD_VAULT_TOKEN"),
            vault_role_id=get("DOORWARD_VAULT_ROLE_ID"),
            vault_secret_id=get("DOORWARD_VAULT_SECRET_ID"),
            vault_port=vault_port,
            ready_timeout=ready_timeout,
            embedded_traces=not any(env.get(name) for name in _OTLP_ENDPOINTS),
            tls_cert_ttl=tls_cert_ttl,
            shred_ledger_file=(
                Path(env["DOORWARD_SHRED_LEDGER"]).expanduser().resolve()
                if env.get("DOORWARD_SHRED_LEDGER")
                else None
            ),
            replicas=replicas,
            vault_nodes=vault_nodes,
        )

    # ---- replicas (`up --replicas N`) -----------------------------------------------------

    @property
    def balanced(self) -> bool:
        """With replicas, every replica binds an offset port and the configured ports of the
        public doors (gateway, secrets REST) belong to balancers in front of them."""
        return self.replicas > 1

    def replica_numbers(self, process: str) -> list[int]:
        """1..N for the gateway and the services; [0] (no replicas) for the trace store."""
        if not self.balanced or process == TRACES:
            return [0]
        return list(range(1, self.replicas + 1))

    @property
    def addressed_stack(self) -> StackSettings:
        """The stack with every replica's address filled in (what every child is told)."""
        s = self.stack
        if not self.balanced:
            return s
        update: dict[str, object] = {}
        for svc in SERVICES:
            grpc_base, http_base = getattr(s, f"{svc}_grpc_port"), getattr(s, f"{svc}_http_port")
            if getattr(s, f"{svc}_grpc_address") is None:
                update[f"{svc}_grpc_address"] = ",".join(
                    f"{s.host}:{replica_port(grpc_base, r)}" for r in self.replica_numbers(svc)
                )
            if getattr(s, f"{svc}_http_url") is None:
                update[f"{svc}_http_url"] = ",".join(
                    f"http://{s.host}:{replica_port(http_base, r)}"
                    for r in self.replica_numbers(svc)
                )
        # The public doors stay where they were: at the balancers.
        update["secrets_public_url"] = s.secrets_base_url
        update["gateway_public_url"] = s.gateway_public_url or f"http://{s.host}:{s.gateway_port}"
        return s.model_copy(update=update)

    def child_stack(self, process: str, replica: int) -> StackSettings:
        """What one replica is told: everybody's addresses, and its own ports to bind."""
        s = self.addressed_stack
        if replica == 0:
            return s
        if process == "gateway":
            return s.model_copy(update={"gateway_port": replica_port(s.gateway_port, replica)})
        kinds = ["http", "grpc"]
        if process == "secrets" and s.secrets_metrics_port is not None:
            kinds.append("metrics")
        return s.model_copy(
            update={
                f"{process}_{kind}_port": replica_port(
                    getattr(s, f"{process}_{kind}_port"), replica
                )
                for kind in kinds
            }
        )

    def vault_node_port(self, node: int) -> int:
        """API port of OpenBao node 1..M (its cluster port is the next one); with one node,
        DOORWARD_VAULT_PORT itself, else that port is the balancer's."""
        return self.vault_port if self.vault_nodes == 1 else replica_port(self.vault_port, node)


def shred_ledger_default(data_dir: Path) -> Path:
    """Beside the data folder, never in it: a restore into an empty folder must not lose it."""
    return data_dir.with_name(data_dir.name + ".shred-ledger.jsonl")


def _stack_kwargs(env: Mapping[str, str]) -> dict[str, str]:
    # Explicit mapping so a test can pass its own environment (pydantic-settings still adds
    # os.environ underneath; the explicit values win).
    names = StackSettings.model_fields.keys()
    return {n: env[f"DOORWARD_{n.upper()}"] for n in names if f"DOORWARD_{n.upper()}" in env}


def env_names() -> list[str]:
    """Every variable `doorward up` itself reads (documentation and the unit test use it)."""
    stack = [f"DOORWARD_{n.upper()}" for n in StackSettings.model_fields]
    own = [
        "DOORWARD_DATA_DIR",
        "DOORWARD_DATABASE_URL",
        "DOORWARD_VAULT_ADDR",
        "DOORWARD_VAULT_TOKEN",
        "DOORWARD_VAULT_ROLE_ID",
        "DOORWARD_VAULT_SECRET_ID",
        "DOORWARD_VAULT_PORT",
        "DOORWARD_READY_TIMEOUT",
        "DOORWARD_TLS_CERT_TTL",
        "DOORWARD_SHRED_LEDGER",
        "DOORWARD_REPLICAS",
        "DOORWARD_VAULT_NODES",
    ]
    return own + stack


@dataclass(frozen=True)
class Port:
    what: str  # e.g. "identity HTTP"
    env: str  # the variable that moves it
    port: int


def port_plan(cfg: UpConfig) -> list[Port]:
    """Every TCP port `up` will bind, so all conflicts are found before anything starts."""
    s = cfg.stack
    ports: list[Port] = []
    for svc in SERVICES:
        for kind in ("http", "grpc"):
            name = f"{svc}_{kind}_port"
            numbers = cfg.replica_numbers(svc)
            if not cfg.balanced or (svc, kind) == ("secrets", "http"):  # a process or a balancer
                ports.append(_port(f"{svc} {kind.upper()}", name, getattr(s, name), 0))
            for r in numbers:
                if r:
                    ports.append(_port(f"{svc} {kind.upper()}", name, getattr(s, name), r))
    if s.secrets_metrics_port is not None:
        for r in cfg.replica_numbers("secrets"):  # never balanced: each replica is scraped
            ports.append(
                _port("secrets metrics", "secrets_metrics_port", s.secrets_metrics_port, r)
            )
    ports.append(_port("gateway", "gateway_port", s.gateway_port, 0))
    for r in cfg.replica_numbers("gateway"):
        if r:
            ports.append(_port("gateway", "gateway_port", s.gateway_port, r))
            ports.append(
                Port(
                    f"gateway replica {r} (PROXY protocol)",
                    f"DOORWARD_GATEWAY_PORT (+{REPLICA_PORT_STEP * r + PROXY_PORT_OFFSET})",
                    proxy_protocol_port(s.gateway_port, r),
                )
            )
    if cfg.embedded_traces:
        ports.append(Port("trace store", "DOORWARD_TRACES_HTTP_PORT", s.traces_http_port))
        ports.append(Port("trace store gRPC", "DOORWARD_TRACES_GRPC_PORT", s.traces_grpc_port))
    if cfg.vault_addr is None:
        if cfg.vault_nodes > 1:
            ports.append(Port("OpenBao balancer", "DOORWARD_VAULT_PORT", cfg.vault_port))
        for node in range(1, cfg.vault_nodes + 1):
            port = cfg.vault_node_port(node)
            step = "" if cfg.vault_nodes == 1 else f" + {REPLICA_PORT_STEP * node}"
            what = "OpenBao" if cfg.vault_nodes == 1 else f"OpenBao node {node}"
            ports.append(Port(what, f"DOORWARD_VAULT_PORT{step}", port))
            ports.append(Port(f"{what} cluster", f"DOORWARD_VAULT_PORT{step} (+1)", port + 1))
    return ports


def _port(what: str, field: str, base: int, replica: int) -> Port:
    env = f"DOORWARD_{field.upper()}"
    if replica == 0:
        return Port(what, env, base)
    step = REPLICA_PORT_STEP * replica
    return Port(f"{what} replica {replica}", f"{env} (+{step})", replica_port(base, replica))


def check_ports(host: str, ports: list[Port], in_use: Callable[[str, int], bool]) -> None:
    seen: dict[int, Port] = {}
    for p in ports:
        if p.port in seen:
            raise DeployError(
                f"{p.what} and {seen[p.port].what} are both set to port {p.port}: change {p.env}"
            )
        seen[p.port] = p
    for p in ports:
        if in_use(host, p.port):
            raise DeployError(
                f"port {host}:{p.port} ({p.what}) is already in use: stop what uses it "
                f"(is another `doorward up` running?) or set {p.env} to a free port"
            )


@dataclass(frozen=True)
class Infra:
    """What the services need from the infrastructure and the data folder."""

    db_urls: dict[str, str] = field(repr=False)  # service -> postgresql+asyncpg:// URL
    vault_addr: str
    approle: AppRoleCreds
    internal_token: str | None = field(repr=False)
    audit_signing_key_file: Path
    identity_key_dir: Path
    # The gateway signs every subgraph request with its private key; the subgraphs get only
    # the public key (doorward_kit/gateway_signature.py).
    gateway_signing_key_file: Path | None = None
    gateway_public_keys: dict[str, Path] = field(default_factory=dict)  # subgraph -> its copy
    # Every process's certificate folder is tls_root/<process>; None = insecure development mode.
    tls_root: Path | None = None


def child_env(
    svc: str, cfg: UpConfig, infra: Infra, base: Mapping[str, str], replica: int = 0
) -> dict[str, str]:
    """The environment of one child process: the caller's, minus supervisor-only credentials,
    plus the whole stack's addresses (so every process agrees) and that service's own items.
    `replica` (1..N with `--replicas N`): which replica, i.e. which ports it binds."""
    env = _without_others_settings(
        svc, {k: v for k, v in base.items() if k not in _SUPERVISOR_ONLY}
    )
    s = cfg.child_stack(svc, replica)
    if svc == "gateway":
        env["DOORWARD_GATEWAY_REPLICAS"] = str(len(cfg.replica_numbers("gateway")))
        if replica:
            # The balancer names each client in a PROXY line on a port of the replica's own,
            # believed from the balancer's address only (gateway/proxy_protocol.py).
            port = proxy_protocol_port(cfg.stack.gateway_port, replica)
            env["DOORWARD_GATEWAY_PROXY_PROTOCOL_PORT"] = str(port)
            env["DOORWARD_GATEWAY_PROXY_PROTOCOL_FROM"] = balancer_source(cfg.stack.host)
    for name in StackSettings.model_fields:
        value = getattr(s, name)
        if value is not None and name not in ("internal_token", "tls_dir"):
            env[f"DOORWARD_{name.upper()}"] = str(value)
    _internal_identity_env(env, svc, infra)
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the prefixer as they happen
    if svc in infra.db_urls:
        env[f"DOORWARD_{svc.upper()}_DB_URL"] = infra.db_urls[svc]
    if svc == "secrets":
        env["DOORWARD_SECRETS_SHRED_LEDGER"] = str(cfg.shred_ledger)
        env["DOORWARD_VAULT_ADDR"] = infra.vault_addr
        env["DOORWARD_VAULT_ROLE_ID"] = infra.approle.role_id
        env["DOORWARD_VAULT_SECRET_ID"] = infra.approle.secret_id
    else:
        # Only the secrets service talks to Vault.
        for name in ("DOORWARD_VAULT_ADDR", "DOORWARD_VAULT_ROLE_ID", "DOORWARD_VAULT_SECRET_ID"):
            env.pop(name, None)
    if cfg.embedded_traces and svc != TRACES:
        # The standard OTLP exporter of every process sends to the embedded store.
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = cfg.traces_endpoint
        _trace_store_client_env(svc, infra, cfg, env)
        # Security ops look for a denial right after it happened: export every second (the
        # SDK's default is 5 s), unless the operator chose otherwise.
        env.setdefault("OTEL_BSP_SCHEDULE_DELAY", "1000")
    if svc == TRACES:
        env["OTEL_TRACES_EXPORTER"] = "none"  # the store does not trace itself
    if svc == "audit":
        env["DOORWARD_AUDIT_SIGNING_KEY_FILE"] = str(infra.audit_signing_key_file)
        # Traces in the graph come from the embedded store; an external collector has its own UI.
        env["DOORWARD_AUDIT_TRACE_STORE"] = "1" if cfg.embedded_traces else "0"
    if svc == "workorders":
        # Its purge hands each organisation's traceDays to the embedded store; with an
        # external collector, retention is the operator's backend's (and the API says so).
        env["DOORWARD_WORKORDERS_TRACE_STORE"] = "1" if cfg.embedded_traces else "0"
    if svc == "identity":
        env["DOORWARD_IDENTITY_KEY_DIR"] = str(infra.identity_key_dir)
    _gateway_signature_env(svc, infra, env)
    return env


def _without_others_settings(svc: str, env: dict[str, str]) -> dict[str, str]:
    """The caller's environment minus what belongs to another process: another service's
    DOORWARD_<SVC>_* (its database URL, key paths, ...; the shared addresses are added back from
    StackSettings) and the data folder, which leads to everybody's files."""
    others = tuple(f"DOORWARD_{other.upper()}_" for other in (*SERVICES, TRACES) if other != svc)
    return {k: v for k, v in env.items() if not k.startswith(others) and k != "DOORWARD_DATA_DIR"}


# --------------------------------------------------------------------------- credentials

CREDENTIALS = "credentials"


def credentials_dir(data_dir: Path, who: str) -> Path:
    """`<data_dir>/credentials/<who>/`: one 0700 folder per process (`supervisor` for `up`'s own
    secrets), holding only that process's files (each 0600)."""
    top = data_dir / CREDENTIALS
    path = top / who
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(top, 0o700)
    os.chmod(path, 0o700)
    return path


def adopt_legacy(old: Path, new: Path) -> None:
    """Move a credential from where an older version kept it (the same key, never a new one)."""
    if old.exists() and not new.exists():
        os.replace(old, new)


def isolation_note(euid: int | None = None) -> str:
    """Why file modes alone do not separate the services here (printed once by `up`)."""
    euid = os.geteuid() if euid is None else euid
    who = "root" if euid == 0 else "your user"
    return (
        f"warning: every service runs as {who}, so each could read the others' credential "
        "folders; `up` passes each only its own, but only separate users (a real process "
        "manager) make the file modes separate them (README: Least privilege)"
    )


def _gateway_signature_env(svc: str, infra: Infra, env: dict[str, str]) -> None:
    """The private key to the gateway alone; the public key to the GraphQL subgraphs."""
    env.pop("DOORWARD_GATEWAY_SIGNING_KEY_FILE", None)
    if svc == "gateway" and infra.gateway_signing_key_file is not None:
        env["DOORWARD_GATEWAY_SIGNING_KEY_FILE"] = str(infra.gateway_signing_key_file)
    if svc in infra.gateway_public_keys:
        env["DOORWARD_GATEWAY_PUBLIC_KEY_FILE"] = str(infra.gateway_public_keys[svc])


def _trace_store_client_env(svc: str, infra: Infra, cfg: UpConfig, env: dict[str, str]) -> None:
    """Under mutual TLS the embedded store's receiver is HTTPS and wants a Doorward certificate:
    the standard OTLP exporter variables point at the process's own certificate folder."""
    if infra.tls_root is None or svc not in TLS_PROCESSES:
        return
    folder = infra.tls_root / svc
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = cfg.traces_endpoint.replace("http://", "https://", 1)
    env["OTEL_EXPORTER_OTLP_CERTIFICATE"] = str(folder / "ca.pem")
    # One file holds the key and the chain (doorward_kit.tls); requests reads it for each new
    # connection, so renewed certificates are used without a restart.
    env["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"] = str(folder / "identity.pem")
    env["OTEL_EXPORTER_OTLP_CLIENT_KEY"] = str(folder / "identity.pem")


def _internal_identity_env(env: dict[str, str], svc: str, infra: Infra) -> None:
    """Each process that speaks internal gRPC gets its own certificate folder (mutual TLS); the
    shared token only in the insecure development mode. (The trace store's read API is gRPC
    too: audit calls it.)"""
    env.pop("DOORWARD_INTERNAL_TOKEN", None)
    env.pop("DOORWARD_TLS_DIR", None)
    if svc not in TLS_PROCESSES:
        return
    if infra.tls_root is not None:
        env["DOORWARD_TLS_DIR"] = str(infra.tls_root / svc)
    elif infra.internal_token is not None:
        env["DOORWARD_INTERNAL_TOKEN"] = infra.internal_token


class _TraceStoreProbe:
    """Asks the trace store's HTTPS receiver with a certificate `up` issued (the store's own;
    `up` is the issuer), loaded afresh for every request: with a short DOORWARD_TLS_CERT_TTL
    the certificates are renewed while the stack starts, and one loaded once expired and got
    every later probe refused (the store never became ready)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get(self, url: str) -> httpx.Response:
        import ssl

        context = ssl.create_default_context(cafile=str(self.folder / "ca.pem"))
        context.load_cert_chain(str(self.folder / "identity.pem"))
        return httpx.get(url, timeout=2.0, trust_env=False, verify=context)


@contextlib.contextmanager
def _trace_store_probe(names: tuple[str, ...], infra: Infra) -> Iterator[_TraceStoreProbe | None]:
    """The trace store's receiver is HTTPS with client certificates under mutual TLS: its
    readiness is asked with a certificate (_TraceStoreProbe)."""
    if TRACES not in names or infra.tls_root is None:
        yield None
        return
    yield _TraceStoreProbe(infra.tls_root / TRACES)


def module_of(svc: str) -> str:
    return "gateway" if svc == "gateway" else f"services.{svc}"


def default_command(svc: str) -> list[str]:
    """How a process is started: the venv's python (the one running us), `-m` its module."""
    return [sys.executable, "-m", module_of(svc)]


def ready_url(svc: str, stack: StackSettings) -> str:
    """Where the process `stack` describes (e.g. UpConfig.child_stack) answers /readyz."""
    return stack.own_http_url(svc) + "/readyz"


def child_name(svc: str, replica: int) -> str:
    return svc if replica == 0 else f"{svc}.{replica}"


def address_lines(cfg: UpConfig, postgres: str, vault: str) -> list[str]:
    """What `up` prints once everything is ready: addresses and file locations, no secrets."""
    s = cfg.addressed_stack
    gateway = f"http://{s.host}:{s.gateway_port}"
    lines = [f"gateway      {gateway}/graphql"]
    if cfg.balanced:
        lines[0] += f"   (balanced over {cfg.replicas} gateways)"
    for svc in SERVICES:
        http = ",".join(s.http_urls(svc))
        grpc = ",".join(s.grpc_addresses(svc))
        lines.append(f"{svc:<12} http {http}   grpc {grpc}")
    lines.append(f"secrets REST {s.secrets_base_url}   (base of uploadUrl / revealUrl)")
    if s.secrets_metrics_port is not None:
        scrape = ",".join(
            f"http://{s.host}:{cfg.child_stack('secrets', r).secrets_metrics_port}/metrics"
            for r in cfg.replica_numbers("secrets")
        )
        lines.append(f"secrets metrics {scrape}   (Prometheus; not on the door)")
    if cfg.embedded_traces:
        lines.append(f"trace store  {cfg.traces_endpoint}   (OTLP/HTTP /v1/traces, /v1/metrics)")
    lines.append(f"PostgreSQL   {postgres}")
    lines.append(f"Vault API    {vault}")
    lines.append(f"data folder  {cfg.data_dir}")
    return lines


def doorward_command(cwd: Path | None = None) -> str:
    """How to call the `doorward` CLI from `cwd`: the venv's script, relative when inside."""
    script = Path(sys.executable).with_name("doorward")
    if not script.exists():
        return "doorward"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(cwd or Path.cwd()))
    return str(script)


def next_step_lines(cfg: UpConfig, doorward: str, cwd: Path | None = None) -> list[str]:
    """The first thing to do once the stack is up, as a command to paste in another terminal;
    it carries DOORWARD_DATA_DIR when that is not the default (bootstrap finds identity's
    database and keys through it)."""
    env = ""
    if cfg.data_dir != (cwd or Path.cwd()) / ".doorward":
        env = f"DOORWARD_DATA_DIR={shlex.quote(str(cfg.data_dir))} "
    where = "another terminal"
    if cfg.database_url:
        where += " with the same DOORWARD_DATABASE_URL"
    return [
        f"next: create your organisation and its first admin, in {where}:",
        f'  {env}{doorward} bootstrap --org "Acme Maintenance" --admin-email admin@acme.example',
        "  (once per organisation; the admin's password is read from standard input)",
    ]


def prefixed(name: str, line: str, width: int = 10) -> str:
    return f"{name:<{width}} | {line.rstrip()}"


# --------------------------------------------------------------------------- data folder


def read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret generated once and kept 0600 in the data folder (never printed)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(make())
    return path.read_text().strip()


def ed25519_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """One `doorward up` per data folder: two would share PostgreSQL and fight over OpenBao."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_file = data_dir / "up.lock"
    fh = open(lock_file, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            other = fh.read().strip() or "?"
            raise DeployError(
                f"another `doorward up` (pid {other}) is using {data_dir}: stop it first, "
                "or set DOORWARD_DATA_DIR to another folder"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()


# --------------------------------------------------------------------------- processes


@dataclass
class Child:
    name: str  # e.g. "identity", or "identity.2" for a replica
    proc: subprocess.Popen[bytes]
    pumps: list[threading.Thread] = field(default_factory=list)
    service: str = ""

    def __post_init__(self) -> None:
        self.service = self.service or self.name


class Output:
    """Serialises lines from many threads onto one stream."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        with self.lock:
            self.stream.write(prefixed(name, text) + "\n")
            self.stream.flush()

    def say(self, text: str) -> None:
        self.line("doorward", text)

    def pump(self, name: str, source: IO[bytes]) -> threading.Thread:
        def run() -> None:
            for raw in iter(source.readline, b""):
                self.line(name, raw.decode(errors="replace"))
            source.close()

        thread = threading.Thread(target=run, name=f"pump-{name}", daemon=True)
        thread.start()
        return thread

    def follow(self, name: str, path: Path, stop: threading.Event) -> threading.Thread:
        """Prefix the new lines of a log file (PostgreSQL and OpenBao write to files)."""

        def run() -> None:
            with contextlib.suppress(OSError), open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                while not stop.is_set():
                    raw = fh.readline()
                    if raw:
                        self.line(name, raw.decode(errors="replace"))
                    else:
                        stop.wait(0.3)

        thread = threading.Thread(target=run, name=f"follow-{name}", daemon=True)
        thread.start()
        return thread


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during start-up."""


class Supervisor:
    def __init__(
        self,
        cfg: UpConfig,
        out: Output,
        environ: Mapping[str, str],
        command: Callable[[str], list[str]] = default_command,
    ) -> None:
        self.cfg = cfg
        self.command = command
        self.out = out
        self.environ = environ
        self.stopping = threading.Event()
        self.postgres: EmbeddedPostgres | None = None
        self.openbao: EmbeddedOpenBao | None = None
        self.children: list[Child] = []
        # `--vault-nodes M`: the OpenBao nodes after the first (self.openbao).
        self.vault_peers: list[EmbeddedOpenBao] = []
        # `--replicas N` / `--vault-nodes M`: what stands in front of the replicas.
        self.balancers: list[TcpBalancer] = []
        # Deaths already reported (a replica may die while its siblings carry on).
        self._reported: set[str] = set()
        self.renewer: CertificateRenewer | None = None
        # The certificate issuer's AppRole, once provisioned (kept by the supervisor only).
        self.pki_creds: AppRoleCreds | None = None

    # ---- start --------------------------------------------------------------------------------

    def preflight(self) -> None:
        extra = (TRACES,) if self.cfg.embedded_traces else ()
        for svc in (*SERVICES, "gateway", *extra) if self.command is default_command else ():
            module = module_of(svc)
            try:
                found = importlib.util.find_spec(f"{module}.__main__") is not None
            except ImportError:
                found = False
            if not found:
                raise DeployError(
                    f"`python -m {module}` is missing from this checkout: pull the latest "
                    "main or run `make up` again after `uv sync`"
                )
        check_ports(self.cfg.stack.host, port_plan(self.cfg), port_in_use)

    def _timed(self, what: str) -> Callable[[], None]:
        self.out.say(f"starting {what} ...")
        t0 = time.monotonic()
        return lambda: self.out.say(f"{what} ready in {time.monotonic() - t0:.1f}s")

    def start_postgres(self) -> tuple[dict[str, str], str]:
        """Service roles and databases; returns (service -> its own login's URL, printable
        server address). The admin login never reaches a service."""
        d = self.cfg.data_dir
        passwords = {
            svc: read_or_create_password(credentials_dir(d, svc) / "db-password")
            for svc in DATABASES
        }
        if self.cfg.database_url:
            done = self._timed("databases on DOORWARD_DATABASE_URL")
            admin = database_url(
                self.cfg.database_url, _dbname(self.cfg.database_url), driver="postgresql"
            )
            try:
                logins = provision_service_databases(admin, DATABASES, passwords)
            except (OSError, ValueError) as exc:
                raise DeployError(
                    f"cannot reach DOORWARD_DATABASE_URL ({type(exc).__name__}): "
                    "check host, port and that the user may CREATE DATABASE and CREATE ROLE"
                ) from exc
            urls = {svc: login_url(self.cfg.database_url, sl) for svc, sl in logins.items()}
            done()
            return urls, _redacted(self.cfg.database_url)
        done = self._timed("PostgreSQL (embedded)")
        self.postgres = EmbeddedPostgres(
            d / "postgres", password_file=credentials_dir(d, "supervisor") / "postgres-password"
        )
        self.postgres.start()
        logins = provision_service_databases(
            self.postgres.admin_url(), DATABASES, passwords, lock_down_cluster=True
        )
        done()
        urls = {
            svc: self.postgres.login_url(sl.login, sl.password, sl.database)
            for svc, sl in logins.items()
        }
        where = (
            f"postgresql://{self.postgres.user}@/postgres?host={self.postgres.socket_dir} "
            f"(pid {self.postgres.pid}, log {self.postgres.log_path}; superuser password in "
            f"{self.postgres.password_file})"
        )
        return urls, where

    def start_vault(self) -> tuple[str, AppRoleCreds, str]:
        """Returns (address, the secrets service's AppRole, printable description)."""
        cfg = self.cfg
        creds_file = credentials_dir(cfg.data_dir, "secrets") / "vault-approle.json"
        adopt_legacy(cfg.data_dir / "vault-approle.json", creds_file)
        if cfg.vault_addr is None:
            if cfg.stack.env == "production":
                self.out.say(
                    "warning: DOORWARD_ENV=production with the embedded OpenBao, whose unseal "
                    "key lies next to its data: set DOORWARD_VAULT_ADDR to a real Vault"
                )
            done = self._timed("OpenBao (embedded)")
            self.openbao = EmbeddedOpenBao(
                cfg.data_dir / "openbao",
                cfg.vault_node_port(1),
                host=cfg.stack.host,
                standby_ok=cfg.vault_nodes > 1,
            )
            creds = self._start_and_provision_openbao(self.openbao, creds_file)
            done()
            where = (
                f"{self.openbao.addr} (pid {self.openbao.pid}; unseal key in "
                f"{self.openbao.init_file}, no root token kept; audit log "
                f"{self.openbao.audit_log_path})"
            )
            if cfg.vault_nodes > 1:
                addr = self._start_vault_cluster(self.openbao)
                nodes = ", ".join(
                    f"{n.addr} (pid {n.pid})" for n in (self.openbao, *self.vault_peers)
                )
                where = (
                    f"{addr} balancing over a {cfg.vault_nodes}-node raft cluster: {nodes}; "
                    f"unseal key in {self.openbao.init_file}"
                )
                return addr, creds, where
            return self.openbao.addr, creds, where
        if cfg.vault_role_id and cfg.vault_secret_id:
            return (
                cfg.vault_addr,
                AppRoleCreds(cfg.vault_role_id, cfg.vault_secret_id),
                cfg.vault_addr,
            )
        if cfg.vault_token:
            import hvac

            creds = self._provision(
                hvac.Client(url=cfg.vault_addr, token=cfg.vault_token), creds_file
            )
            return cfg.vault_addr, creds, cfg.vault_addr
        raise DeployError(
            "DOORWARD_VAULT_ADDR is set but neither DOORWARD_VAULT_TOKEN (to provision it) nor "
            "DOORWARD_VAULT_ROLE_ID and DOORWARD_VAULT_SECRET_ID are: set one of them"
        )

    def _start_vault_cluster(self, first: EmbeddedOpenBao) -> str:
        """Nodes 2..M join the first node's raft cluster (unsealed with its key); a balancer at
        DOORWARD_VAULT_PORT hands connections to any live node (standbys forward requests to
        the active one), so the cluster's address survives the loss of its leader."""
        cfg = self.cfg
        host = cfg.stack.host
        ports = [cfg.vault_node_port(n) for n in range(1, cfg.vault_nodes + 1)]
        for node in range(2, cfg.vault_nodes + 1):
            done = self._timed(f"OpenBao node {node}")
            peer = EmbeddedOpenBao(
                cfg.data_dir / f"openbao-node{node}",
                ports[node - 1],
                host=host,
                node_id=f"doorward-node{node}",
                join=[f"http://{host}:{p}" for p in ports if p != ports[node - 1]],
                keys_from=first.init_file,
            )
            peer.start(timeout=60)
            self.vault_peers.append(peer)
            done()
        balancer = TcpBalancer(
            "openbao",
            host,
            cfg.vault_port,
            [(host, p) for p in ports],
            prefer_path="/v1/sys/health",
        )
        balancer.start()
        self.balancers.append(balancer)
        addr = f"http://{host}:{cfg.vault_port}"
        deadline = time.monotonic() + cfg.ready_timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (
                    httpx.get(f"{addr}/v1/sys/health", timeout=2.0, trust_env=False).status_code
                    == 200
                ):
                    return addr
            if time.monotonic() > deadline:
                raise DeployError(f"no OpenBao node became active within {cfg.ready_timeout:.0f}s")
            time.sleep(0.2)

    def start_door_balancers(self) -> None:
        """With replicas: the gateway's and the secrets door's configured ports take every
        client's connection and hand it to a live replica."""
        if not self.cfg.balanced:
            return
        s = self.cfg.stack
        for svc, port in (("gateway", s.gateway_port), ("secrets", s.secrets_http_port)):
            backends = [
                (s.host, proxy_protocol_port(s.gateway_port, r))
                if svc == "gateway"
                else (s.host, self.cfg.child_stack(svc, r).secrets_http_port)
                for r in self.cfg.replica_numbers(svc)
            ]
            # The gateway learns each client's address from the balancer's PROXY line (rate
            # limits, audit sourceIp); the secrets door still sees the balancer.
            balancer = TcpBalancer(svc, s.host, port, backends, proxy_protocol=svc == "gateway")
            balancer.start()
            self.balancers.append(balancer)

    def _start_and_provision_openbao(self, bao: EmbeddedOpenBao, creds_file: Path) -> AppRoleCreds:
        """Start the embedded OpenBao; provision it only when needed, with a root token that is
        revoked right after: the initial one on the first start, else a fresh one from
        generate-root. Needed = first start, no AppRole credential yet, or the policy or the
        provisioning code changed since the last provisioning (provision_fingerprint)."""
        state_file = bao.data_dir / "provisioned.json"
        fingerprint = provision_fingerprint()
        known = json.loads(creds_file.read_text()) if creds_file.exists() else {}
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        has_ca = self.cfg.stack.insecure_internal or self.pki_creds_file.exists()
        if state.get("fingerprint") == fingerprint and known.get("secret_id") and has_ca:
            bao.start()
            return AppRoleCreds(str(known["role_id"]), str(known["secret_id"]))
        # The unauthenticated generate-root endpoints are opened only for this start, and only
        # when no root token is left (after the first provisioning).
        regenerate = bao.init_file.exists() and bao.stored_root_token() is None
        bao.start(allow_generate_root=regenerate)
        token = bao.stored_root_token() or bao.generate_root()
        try:
            creds = self._provision(bao.client(token), creds_file)
        finally:
            bao.revoke_root(token)
        _write_private(state_file, json.dumps({"fingerprint": fingerprint}))
        if regenerate:
            # Close the generate-root endpoints again (config is read at start only).
            bao.stop()
            bao.start()
        self.out.say("OpenBao provisioned; its root token is revoked")
        return creds

    def _provision(self, client: object, creds_file: Path) -> AppRoleCreds:
        import hvac

        assert isinstance(client, hvac.Client)
        known = json.loads(creds_file.read_text()) if creds_file.exists() else {}
        try:
            creds = provision_vault(client, secret_id=known.get("secret_id"))
        except hvac.exceptions.Forbidden as exc:
            raise DeployError(
                "the Vault token may not provision Doorward (mounts, policy, AppRole): "
                "use a token with those rights or give DOORWARD_VAULT_ROLE_ID/_SECRET_ID"
            ) from exc
        except (hvac.exceptions.VaultError, OSError) as exc:
            raise DeployError(
                f"cannot provision Vault ({type(exc).__name__}): is it reachable?"
            ) from exc
        if known.get("secret_id") != creds.secret_id:
            tmp = creds_file.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"role_id": creds.role_id, "secret_id": creds.secret_id}, fh)
            os.replace(tmp, creds_file)
        self._provision_pki(client)
        provision_backup_credentials(client, self.cfg.data_dir)
        return creds

    # ---- service identity (mutual TLS) ---------------------------------------------------------

    @property
    def pki_creds_file(self) -> Path:
        return self.cfg.data_dir / "vault-pki-issuer.json"

    def _provision_pki(self, client: object) -> None:
        """The internal CA and the issuer AppRole, with the provisioning token (while valid)."""
        import hvac

        assert isinstance(client, hvac.Client)
        if self.cfg.stack.insecure_internal:
            return
        known = _read_json(self.pki_creds_file)
        try:
            creds = provision_pki(
                client, all_hosts(self.cfg.stack), secret_id=known.get("secret_id")
            )
        except (hvac.exceptions.VaultError, OSError) as exc:
            raise DeployError(
                f"cannot set up the internal CA in Vault ({type(exc).__name__}): the token "
                "must be allowed to mount the PKI engine, write policies and AppRoles"
            ) from exc
        if known.get("secret_id") != creds.secret_id:
            _write_json_private(
                self.pki_creds_file, {"role_id": creds.role_id, "secret_id": creds.secret_id}
            )
        self.pki_creds = creds

    def start_certificates(self, vault_addr: str) -> Path | None:
        """Issue every process its certificate, then keep renewing them; None in the insecure
        development mode (plain TCP, shared token)."""
        if self.cfg.stack.insecure_internal:
            self.out.say(
                "WARNING: DOORWARD_INSECURE_INTERNAL=1: internal gRPC runs over plain TCP with "
                "one shared token; any process can claim any service name. Development only."
            )
            return None
        creds = self.pki_creds
        if creds is None:
            known = _read_json(self.pki_creds_file)
            if not known.get("secret_id"):
                raise DeployError(
                    "no credentials to issue service certificates: give DOORWARD_VAULT_TOKEN "
                    "once so `up` can set up the internal CA (PKI engine), or set "
                    "DOORWARD_INSECURE_INTERNAL=1 for development"
                )
            creds = AppRoleCreds(known["role_id"], known["secret_id"])
        root = self.cfg.data_dir / "tls"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        folders = {svc: root / svc for svc in TLS_PROCESSES}
        issuer = CertificateIssuer(
            vault_addr,
            creds,
            [self.cfg.stack.host],
            self.cfg.tls_cert_ttl,
            service_hosts=service_hosts(self.cfg.stack),
        )
        self.renewer = CertificateRenewer(issuer, folders)
        done = self._timed("service certificates (OpenBao PKI)")
        try:
            due = self.renewer.issue_now()
        except Exception as exc:
            raise DeployError(
                f"cannot issue service certificates ({type(exc).__name__}): is the "
                f"internal CA provisioned? (remove {self.pki_creds_file} to provision again)"
            ) from exc
        done()
        self.renewer.start(due)
        return root

    def prepare_files(self) -> tuple[str, Path, Path]:
        """Internal token, audit signing key, identity key folder: created once, 0600/0700,
        each key in its service's own credentials folder (moved there from older layouts)."""
        d = self.cfg.data_dir
        if self.cfg.stack.internal_token is not None:
            token = self.cfg.stack.internal_token.get_secret_value()
        else:
            # At the top of the data folder: tests and tools read it from there.
            token = read_or_create_secret(d / "internal-token", lambda: secrets.token_urlsafe(32))
        audit_key = credentials_dir(d, "audit") / "audit-signing-key.pem"
        adopt_legacy(d / "keys" / "audit-signing-key.pem", audit_key)
        read_or_create_secret(audit_key, ed25519_pem)
        identity_dir = credentials_dir(d, "identity") / "keys"
        adopt_legacy(d / "keys" / "identity", identity_dir)
        identity_dir.mkdir(exist_ok=True, mode=0o700)
        return token, audit_key, identity_dir

    def prepare_gateway_keys(self) -> tuple[Path, dict[str, Path]]:
        """The gateway's signing key pair, created once in its credentials folder (0600), and a
        copy of the public key in each subgraph's own folder (each reads only its own)."""
        d = self.cfg.data_dir
        gateway = credentials_dir(d, "gateway")
        private, public = gateway / "signing-key.pem", gateway / "signing-key.pub.pem"
        create_key_pair(private, public)
        copies: dict[str, Path] = {}
        for svc in GRAPHQL_SUBGRAPHS:
            copy = credentials_dir(d, svc) / "gateway-public-key.pem"
            if not copy.exists() or copy.read_bytes() != public.read_bytes():
                tmp = copy.with_name(copy.name + ".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(public.read_bytes())
                os.replace(tmp, copy)
            copies[svc] = copy
        return private, copies

    def spawn(self, svc: str, infra: Infra, replica: int = 0) -> Child:
        proc = subprocess.Popen(
            self.command(svc),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env(svc, self.cfg, infra, self.environ, replica),
            # Own session: Ctrl-C reaches only us, and we stop children in order.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        assert proc.stdout is not None
        name = child_name(svc, replica)
        child = Child(name, proc, [self.out.pump(name, proc.stdout)], service=svc)
        self.children.append(child)
        return child

    def start_wave(self, names: tuple[str, ...], infra: Infra) -> None:
        """Spawn `names` at once, then wait until each answers /readyz (reported as each does)."""
        pending: dict[str, Callable[[], None]] = {}
        urls: dict[str, str] = {}
        for svc in names:
            for replica in self.cfg.replica_numbers(svc):
                name = child_name(svc, replica)
                pending[name] = self._timed(name)
                urls[name] = ready_url(svc, self.cfg.child_stack(svc, replica))
                self.spawn(svc, infra, replica)
        deadline = time.monotonic() + self.cfg.ready_timeout
        with (
            httpx.Client(timeout=2.0, trust_env=False) as http,  # no proxy for loopback
            _trace_store_probe(names, infra) as traces_http,
        ):
            while pending:
                self._check_stop()
                death = self.first_death()  # one of these, or an earlier process
                if death:
                    svc = death.split()[0]
                    if svc in pending:
                        raise DeployError(f"{death} while starting (see its lines above)")
                    starting = f"{', '.join(pending)} {'was' if len(pending) == 1 else 'were'}"
                    raise DeployError(f"{death} while {starting} starting")
                for svc in list(pending):
                    url = urls[svc]
                    client: httpx.Client | _TraceStoreProbe = http
                    if svc.split(".")[0] == TRACES and traces_http is not None:
                        url, client = url.replace("http://", "https://", 1), traces_http
                    with contextlib.suppress(httpx.TransportError):
                        if client.get(url).status_code == 200:
                            pending.pop(svc)()
                if pending and time.monotonic() > deadline:
                    svc = next(iter(pending))
                    raise DeployError(
                        f"{svc} was not ready at {urls[svc]} within "
                        f"{self.cfg.ready_timeout:.0f}s: see its lines above "
                        "(raise DOORWARD_READY_TIMEOUT if it is just slow)"
                    )
                if pending:
                    time.sleep(0.1)

    def start(self) -> None:
        t0 = time.monotonic()
        self.preflight()
        db_urls, pg_where = self.start_postgres()
        self._check_stop()
        vault_addr, creds, vault_where = self.start_vault()
        self._check_stop()
        token, audit_key, identity_dir = self.prepare_files()
        gateway_key, gateway_public = self.prepare_gateway_keys()
        tls_root = self.start_certificates(vault_addr)
        infra = Infra(
            db_urls,
            vault_addr,
            creds,
            token if tls_root is None else None,
            audit_key,
            identity_dir,
            gateway_signing_key_file=gateway_key,
            gateway_public_keys=gateway_public,
            tls_root=tls_root,
        )
        self.out.say(
            f"credentials: {self.cfg.data_dir / CREDENTIALS}/<service>/ (each only its own); "
            f"certificates: {self.cfg.data_dir / 'tls'}/<process>/"
        )
        self.out.say(isolation_note())
        self.start_door_balancers()
        for wave in self.cfg.waves:
            self.start_wave(wave, infra)
        for line in address_lines(self.cfg, pg_where, vault_where):
            self.out.say(line)
        self.out.say(f"stack is up in {time.monotonic() - t0:.1f}s; Ctrl-C stops it")
        for line in next_step_lines(self.cfg, doorward_command()):
            self.out.say(line)

    def _check_stop(self) -> None:
        if self.stopping.is_set():
            raise Interrupted

    # ---- run / stop ---------------------------------------------------------------------------

    def first_death(self) -> str | None:
        """Name and exit status of a process that is gone, if any."""
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                return f"{child.name} exited with code {code}"
        if self.openbao is not None and not self.openbao.is_running():
            return "OpenBao exited"
        if self.postgres is not None and not self.postgres.is_running():
            return "PostgreSQL exited"
        return None

    def fatal_death(self) -> str | None:
        """Like first_death, but a replica's death (or an OpenBao node's) is only reported
        while a sibling lives on: the stack stops when the last one of something is gone."""
        if not self.cfg.balanced and self.cfg.vault_nodes == 1:
            return self.first_death()
        alive: dict[str, int] = {}
        for child in self.children:
            code = child.proc.poll()
            alive[child.service] = alive.get(child.service, 0) + (code is None)
            if code is not None and child.name not in self._reported:
                self._reported.add(child.name)
                self.out.say(f"{child.name} exited with code {code}")
        for service, count in alive.items():
            if count == 0:
                return f"every {service} replica exited"
        nodes = [n for n in (self.openbao, *self.vault_peers) if n is not None]
        for node in nodes:
            if not node.is_running() and node.node_id not in self._reported:
                self._reported.add(node.node_id)
                self.out.say(f"OpenBao {node.node_id} exited")
        if nodes and not any(n.is_running() for n in nodes):
            return "every OpenBao node exited"
        if self.postgres is not None and not self.postgres.is_running():
            return "PostgreSQL exited"
        return None

    def watch(self) -> int:
        """Block until a signal (exit 0) or a death (exit 1)."""
        while not self.stopping.wait(0.5):
            death = self.fatal_death()
            if death:
                self.out.say(f"{death}; stopping the stack")
                return 1
        return 0

    def stop(self) -> None:
        if self.renewer is not None:
            self.renewer.stop()
        for balancer in self.balancers:
            balancer.stop()
        for child in reversed(self.children):
            if child.proc.poll() is None:
                self.out.say(f"stopping {child.name} (pid {child.proc.pid})")
            stop_pid(child.proc.pid, signal.SIGTERM, timeout=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=1)
            for pump in child.pumps:
                pump.join(timeout=1)
        for peer in reversed(self.vault_peers):
            self.out.say(f"stopping OpenBao {peer.node_id} (pid {peer.pid})")
            peer.stop()
        if self.openbao is not None:
            self.out.say(f"stopping OpenBao (pid {self.openbao.pid})")
            self.openbao.stop()
        if self.postgres is not None and pid_alive(self.postgres.pid):
            self.out.say(f"stopping PostgreSQL (pid {self.postgres.pid})")
            self.postgres.stop()


def provision_backup_credentials(client: object, data_dir: Path) -> None:
    """`doorward backup create`'s own AppRole (snapshot only), in credentials/backup/."""
    import hvac

    assert isinstance(client, hvac.Client)
    path = credentials_dir(data_dir, "backup") / "vault-approle.json"
    known = _read_json(path)
    try:
        creds = provision_backup_role(client, secret_id=known.get("secret_id"))
    except (hvac.exceptions.VaultError, OSError) as exc:
        raise DeployError(
            f"cannot set up the backup AppRole in Vault ({type(exc).__name__}): the token "
            "must be allowed to write policies and AppRoles"
        ) from exc
    if known.get("secret_id") != creds.secret_id:
        _write_json_private(path, {"role_id": creds.role_id, "secret_id": creds.secret_id})


def _read_json(path: Path) -> dict[str, str]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _write_json_private(path: Path, value: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(value, fh)
    os.replace(tmp, path)


def _dbname(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).database or "postgres"


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def run_up(
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    command: Callable[[str], list[str]] = default_command,
) -> int:
    """The whole of `doorward up`; returns the exit code. Tests may swap `command`."""
    env = dict(os.environ if environ is None else environ)
    out = Output(stream or sys.stdout)
    try:
        cfg = UpConfig.from_env(env)
    except DeployError as exc:
        out.say(f"error: {exc}")
        return 2
    sup = Supervisor(cfg, out, env, command)
    # deploy.embedded logs warnings (e.g. where the OpenBao unseal key is): same stream, prefixed.
    handler = _OutputHandler(out)
    logging.getLogger("doorward.deploy").addHandler(handler)

    def on_signal(signum: int, _frame: object) -> None:
        sup.stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    follow_stop = threading.Event()
    code = 1
    try:
        with data_dir_lock(cfg.data_dir):
            try:
                sup.start()
                if sup.postgres is not None:
                    out.follow("postgres", sup.postgres.log_path, follow_stop)
                if sup.openbao is not None:
                    out.follow("openbao", sup.openbao.log_path, follow_stop)
                code = sup.watch()
            except Interrupted:
                code = 0
            except DeployError as exc:
                out.say(f"error: {exc}")
                code = 1
            finally:
                follow_stop.set()
                started = bool(sup.children) or sup.postgres is not None or sup.openbao is not None
                sup.stop()
                if started:
                    out.say("stopped")
    except DeployError as exc:  # the data folder lock
        out.say(f"error: {exc}")
        code = 1
    finally:
        logging.getLogger("doorward.deploy").removeHandler(handler)
        for s, previous_handler in previous.items():
            signal.signal(s, previous_handler)
    return code


class _OutputHandler(logging.Handler):
    def __init__(self, out: Output) -> None:
        super().__init__(logging.INFO)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.say(f"{record.levelname.lower()}: {record.getMessage()}")
