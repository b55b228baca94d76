"""Service identity on the wire: mutual TLS with short-lived certificates, reloaded in place.

Every process owns one credentials folder (0700) written by whoever issues its certificates
(`doorward up` from OpenBao's PKI engine, or a test CA):

- `identity.pem` (0600): the private key followed by the certificate chain. Key and certificate
  travel in ONE file replaced atomically (rename), so a reader never pairs a new certificate
  with an old key half-way through a renewal.
- `ca.pem`: the Doorward CA, the only trust anchor for internal peers (never the system store).

On Kubernetes the folder is a mounted `kubernetes.io/tls` Secret written by cert-manager instead:
`tls.key`, `tls.crt` (the chain) and `ca.crt`. It is read when `identity.pem` is absent; the
kubelet swaps all three files at once (one symlink), so key and chain still change together.

A certificate names its service three ways: URI SAN `spiffe://doorward/<service>` (what the
servers authorize on), DNS SAN `<service>.doorward.internal` (what a client checks the server
against, whatever address it dials) and the common name.

Reloading without restarts: a server's credentials are `grpc.dynamic_ssl_server_credentials`
whose fetcher (called by gRPC core on every new connection) returns a new configuration when
the folder's files changed; a client channel is rebuilt when they change (grpc Python has no
dynamic client credentials), see `doorward_kit.grpc.ServiceChannel`. Connections already open
keep the certificate they were made with until they close; certificate lifetime is checked at
the handshake.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

# "traces": the embedded trace store, whose read API audit calls (its OTLP receiver is HTTP).
SERVICES: tuple[str, ...] = ("gateway", "identity", "workorders", "secrets", "audit", "traces")
TRUST_DOMAIN = "doorward"
DNS_SUFFIX = "doorward.internal"
IDENTITY_FILE = "identity.pem"
CA_FILE = "ca.pem"
# The same material as a Kubernetes TLS Secret (cert-manager) lays it out.
K8S_KEY_FILE, K8S_CHAIN_FILE, K8S_CA_FILE = "tls.key", "tls.crt", "ca.crt"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)


def spiffe_id(service: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/{service}"


def dns_name(service: str) -> str:
    return f"{service}.{DNS_SUFFIX}"


def service_from_spiffe(uri: str) -> str | None:
    """`spiffe://doorward/identity` -> `identity`; anything else (other trust domain, a path
    deeper than one segment, an unknown service) -> None."""
    prefix = f"spiffe://{TRUST_DOMAIN}/"
    if not uri.startswith(prefix):
        return None
    name = uri[len(prefix) :]
    return name if name in SERVICES else None


class CredentialsError(Exception):
    """The credentials folder is missing a file or holds something unusable."""


@dataclass(frozen=True)
class Material:
    key_pem: bytes
    chain_pem: bytes
    ca_pem: bytes


Stamp = tuple[tuple[int, int, int], ...]


class CredentialFolder:
    """One process's certificate folder (see the module docstring for the layout)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def identity_file(self) -> Path:
        return self.path / IDENTITY_FILE

    @property
    def ca_file(self) -> Path:
        return self.path / CA_FILE

    def _files(self) -> tuple[Path, ...]:
        """The files holding the material: Doorward's layout, else a Kubernetes TLS Secret's."""
        if not self.identity_file.exists() and (self.path / K8S_KEY_FILE).exists():
            return tuple(self.path / n for n in (K8S_KEY_FILE, K8S_CHAIN_FILE, K8S_CA_FILE))
        return (self.identity_file, self.ca_file)

    def stamp(self) -> Stamp:
        """Cheap change detector (inode, size, mtime of both files): a rename changes the inode."""

        def one(p: Path) -> tuple[int, int, int]:
            st = p.stat()
            return (st.st_ino, st.st_size, st.st_mtime_ns)

        try:
            files = self._files()
            return tuple(one(p) for p in files)
        except OSError as exc:
            raise CredentialsError(f"no certificate in {self.path}: {exc.strerror}") from None

    def load(self) -> Material:
        try:
            *parts, ca_path = self._files()
            bundle = b"\n".join(p.read_bytes() for p in parts)
            ca = ca_path.read_bytes()
        except OSError as exc:
            raise CredentialsError(f"no certificate in {self.path}: {exc.strerror}") from None
        keys = [b.group(0) for b in _PEM_BLOCK.finditer(bundle) if b"PRIVATE KEY" in b.group(1)]
        certs = [b.group(0) for b in _PEM_BLOCK.finditer(bundle) if b.group(1) == b"CERTIFICATE"]
        if len(keys) != 1 or not certs or b"CERTIFICATE" not in ca:
            raise CredentialsError(
                f"{self.identity_file} must hold one private key and a certificate chain, "
                f"{self.ca_file} the CA certificate"
            )
        return Material(keys[0], b"".join(certs), ca)

    def write(self, key_pem: str | bytes, chain_pem: str | bytes, ca_pem: str | bytes) -> None:
        """Install a new key + chain (and CA) atomically, readable by the owner only."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        _write_atomic(self.ca_file, _bytes(ca_pem))
        bundle = _bytes(key_pem).rstrip(b"\n") + b"\n" + _bytes(chain_pem).rstrip(b"\n") + b"\n"
        _write_atomic(self.identity_file, bundle)


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- gRPC credentials


def server_credentials(folder: CredentialFolder) -> grpc.ServerCredentials:
    """Server side of mutual TLS: the process's certificate, client certificates REQUIRED and
    verified against the Doorward CA only; reloaded for new connections when the files change."""
    current = {"stamp": folder.stamp()}
    initial = _server_config(folder.load())

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC core for every new connection: one stat() while nothing changed.
        try:
            stamp = folder.stamp()
            if stamp == current["stamp"]:
                return None
            config = _server_config(folder.load())
        except CredentialsError as exc:
            # Keep serving with the last good certificate rather than refusing everyone.
            log.warning("server certificate not reloaded", extra={"fields": {"why": str(exc)}})
            return None
        current["stamp"] = stamp
        log.info("server certificate reloaded", extra={"fields": {"folder": str(folder.path)}})
        return config

    return grpc.dynamic_ssl_server_credentials(initial, fetch, require_client_authentication=True)


def _server_config(material: Material) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key_pem, material.chain_pem)], root_certificates=material.ca_pem
    )


def channel_credentials(material: Material) -> grpc.ChannelCredentials:
    """Client side: present our certificate, trust only the Doorward CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca_pem,
        private_key=material.key_pem,
        certificate_chain=material.chain_pem,
    )


# --------------------------------------------------------------------------- the peer


def peer_service(auth_context: dict[str, list[bytes]]) -> str | None:
    """The service named by a verified peer certificate, from grpc's auth context.

    gRPC core puts a peer certificate's URI SAN under `peer_spiffe_id` only once the chain has
    been verified against our root (require_client_authentication), so the name is proven."""
    for raw in auth_context.get("peer_spiffe_id", ()):
        name = service_from_spiffe(raw.decode(errors="replace"))
        if name is not None:
            return name
    return None


def is_tls(auth_context: dict[str, list[bytes]]) -> bool:
    return auth_context.get("transport_security_type", [b""])[0] == b"ssl"
