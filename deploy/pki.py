"""The internal CA: OpenBao's PKI secrets engine, one role per service, short-lived certificates.

Provisioning (with the provisioning token, like the other mounts): mount `doorward-pki`, create
its root key inside OpenBao (it never leaves), one role per service that can only issue that
service's names (DNS `<svc>.doorward.internal`, URI `spiffe://doorward/<svc>`, plus the host or
IP the stack dials), and an AppRole `doorward-pki-issuer` whose policy may only issue from those
roles. The supervisor keeps the issuer's credentials (never a service) and issues every process
its certificate into that process's own folder, then renews them all at 2/3 of their lifetime
while the processes run (they reload the files themselves, doorward_kit.tls).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac

from deploy.embedded import AppRoleCreds, _retry
from doorward_kit.settings import StackSettings
from doorward_kit.tls import SERVICES, CredentialFolder, dns_name, spiffe_id

log = logging.getLogger("doorward.deploy")

PKI_MOUNT = "doorward-pki"
ISSUER_ROLE = "doorward-pki-issuer"
ISSUER_POLICY = "doorward-pki-issuer"
CA_TTL = "87600h"  # the root lives ten years; the leaves it signs live hours
LEAF_MAX_TTL = "720h"
RENEW_AT = 2 / 3  # of a certificate's lifetime


def _issuer_policy() -> str:
    # `update` on issue/<role> only: the issuer can mint service certificates, nothing else
    # (no root rotation, no role changes, no signing of arbitrary CSRs).
    return "\n".join(
        f'path "{PKI_MOUNT}/issue/{svc}" {{ capabilities = ["update"] }}' for svc in SERVICES
    )


def _hosts(hosts: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split the addresses the stack dials into (DNS names, IPs)."""
    names, ips = [], []
    for host in hosts:
        try:
            ips.append(str(ipaddress.ip_address(host)))
        except ValueError:
            names.append(host)
    return names, ips


def provision_pki(
    client: hvac.Client, hosts: Iterable[str], *, secret_id: str | None = None
) -> AppRoleCreds:
    """Idempotently set up the internal CA and return the issuer's AppRole credentials.

    `client` needs the provisioning token (mounts, policies, auth); a still-valid `secret_id`
    is kept so restarts do not pile them up."""
    names, _ = _hosts(hosts)
    mounts: dict[str, Any] = _retry(lambda: client.sys.list_mounted_secrets_engines())
    mounts = mounts.get("data", mounts)
    if f"{PKI_MOUNT}/" not in mounts:
        client.sys.enable_secrets_engine("pki", path=PKI_MOUNT, config={"max_lease_ttl": CA_TTL})
    if not client.secrets.pki.read_ca_certificate(mount_point=PKI_MOUNT):
        client.secrets.pki.generate_root(
            "internal",
            "Doorward internal CA",
            extra_params={"ttl": CA_TTL, "key_type": "ec", "key_bits": 256},
            mount_point=PKI_MOUNT,
        )
    for svc in SERVICES:
        client.secrets.pki.create_or_update_role(
            svc,
            extra_params={
                "allowed_domains": [dns_name(svc), *names],
                "allow_bare_domains": True,
                "allow_subdomains": False,
                "allow_glob_domains": False,
                "allow_localhost": True,
                "allow_ip_sans": True,
                "allowed_uri_sans": [spiffe_id(svc)],
                "enforce_hostnames": True,
                "server_flag": True,
                "client_flag": True,
                "key_type": "ec",
                "key_bits": 256,
                "max_ttl": LEAF_MAX_TTL,
                # Short-lived leaves expire instead of being revoked: no CRL growth.
                "no_store": True,
            },
            mount_point=PKI_MOUNT,
        )
    client.sys.create_or_update_policy(ISSUER_POLICY, _issuer_policy())
    auths: dict[str, Any] = client.sys.list_auth_methods()
    auths = auths.get("data", auths)
    if "approle/" not in auths:
        client.sys.enable_auth_method("approle", path="approle")
    client.auth.approle.create_or_update_approle(
        ISSUER_ROLE, token_policies=[ISSUER_POLICY], token_ttl="20m", token_max_ttl="1h"
    )
    role_id = str(client.auth.approle.read_role_id(ISSUER_ROLE)["data"]["role_id"])
    if secret_id is not None:
        try:
            found = client.auth.approle.read_secret_id(ISSUER_ROLE, secret_id)
        except hvac.exceptions.InvalidPath:
            found = None
        if found:
            return AppRoleCreds(role_id, secret_id)
    new = client.auth.approle.generate_secret_id(ISSUER_ROLE)["data"]["secret_id"]
    return AppRoleCreds(role_id, str(new))


def stack_of(env: Mapping[str, str]) -> StackSettings:
    """The stack's addresses as `env` gives them (DOORWARD_HOST, DOORWARD_*_ADDRESS, ...)."""
    fields = StackSettings.model_fields
    given = {k[len("DOORWARD_") :].lower(): v for k, v in env.items() if k.startswith("DOORWARD_")}
    return StackSettings.model_validate({k: v for k, v in given.items() if k in fields})


def service_hosts(stack: StackSettings) -> dict[str, list[str]]:
    """Each process's certificate names from the addresses it is dialled at."""
    return {svc: stack.address_hosts(svc) for svc in SERVICES}


def all_hosts(stack: StackSettings) -> list[str]:
    """Every name any service is dialled at (the roles may issue them), the host first."""
    found = [stack.host] + [h for hosts in service_hosts(stack).values() for h in hosts]
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class Issued:
    serial: str
    expires_at: float  # epoch seconds


class CertificateIssuer:
    """Issues service certificates from the PKI engine as the issuer AppRole."""

    def __init__(
        self,
        vault_addr: str,
        creds: AppRoleCreds,
        hosts: Iterable[str],
        ttl: float,
        *,
        service_hosts: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.vault_addr = vault_addr
        self._creds = creds
        self._names, self._ips = _hosts(hosts)
        # A service's own addresses (StackSettings.address_hosts) go into its certificate only.
        self._own = {svc: _hosts(found) for svc, found in (service_hosts or {}).items()}
        self.ttl = ttl

    def _client(self) -> hvac.Client:
        # A fresh short-lived login per round: nothing long-lived to leak or renew.
        client = hvac.Client(url=self.vault_addr)
        client.auth.approle.login(self._creds.role_id, self._creds.secret_id)
        return client

    def issue_all(self, folders: Mapping[str, Path]) -> dict[str, Issued]:
        client = self._client()
        try:
            return {svc: self._issue(client, svc, folder) for svc, folder in folders.items()}
        finally:
            client.logout()

    def _issue(self, client: hvac.Client, svc: str, folder: Path) -> Issued:
        own_names, own_ips = self._own.get(svc, ([], []))
        data = client.secrets.pki.generate_certificate(
            svc,
            dns_name(svc),
            extra_params={
                "alt_names": ",".join(
                    dict.fromkeys([dns_name(svc), "localhost", *self._names, *own_names])
                ),
                "ip_sans": ",".join(dict.fromkeys([*self._ips, *own_ips])),
                "uri_sans": spiffe_id(svc),
                "ttl": f"{max(int(self.ttl), 1)}s",
                "private_key_format": "pkcs8",
            },
            mount_point=PKI_MOUNT,
        )["data"]
        chain = data["certificate"].rstrip("\n") + "\n"
        # The root is the trust anchor (ca.pem); an intermediate, if any, travels in the chain.
        for extra in data.get("ca_chain") or []:
            if extra.strip() != data["issuing_ca"].strip():
                chain += extra.rstrip("\n") + "\n"
        CredentialFolder(folder).write(data["private_key"], chain, data["issuing_ca"])
        return Issued(str(data["serial_number"]), float(data["expiration"]))


class CertificateRenewer:
    """Re-issues every process's certificate at RENEW_AT of its lifetime, in a thread.

    A failed round (OpenBao briefly away) is retried every few seconds; the processes keep their
    current certificates meanwhile, and they still have a third of their lifetime left."""

    def __init__(self, issuer: CertificateIssuer, folders: Mapping[str, Path]) -> None:
        self.issuer = issuer
        self.folders = dict(folders)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def issue_now(self) -> float:
        """Issue every certificate; returns when the next round is due (monotonic)."""
        started = time.monotonic()
        issued = self.issuer.issue_all(self.folders)
        self.rounds += 1
        lifetime = min(i.expires_at for i in issued.values()) - time.time()
        return started + max(lifetime, 1.0) * RENEW_AT

    def start(self, due: float) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(due,), name="doorward-cert-renewer", daemon=True
        )
        self._thread.start()

    def _run(self, due: float) -> None:
        while not self._stop.wait(max(due - time.monotonic(), 0.0)):
            try:
                due = self.issue_now()
                log.info("service certificates renewed")
            except Exception as exc:  # keep going; never print what the error may carry
                log.warning(
                    "renewing service certificates failed (%s); retrying", type(exc).__name__
                )
                due = time.monotonic() + min(5.0, max(self.issuer.ttl / 10, 0.5))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def run_certs(
    out: Path,
    credentials: Path,
    env: Mapping[str, str],
    say: Any,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
) -> None:
    """`doorward certs`: what `up` does for its children, for stacks run by something else
    (docker-compose.yml, systemd): issue every process its certificate into OUT/<process>/ with
    the issuer AppRole `doorward provision` wrote into CREDENTIALS, then (unless `once`) keep
    renewing them until `stop` is set."""
    from deploy.errors import DeployError

    addr = env.get("DOORWARD_VAULT_ADDR")
    try:
        creds = AppRoleCreds(
            (credentials / "pki-issuer-role-id").read_text().strip(),
            (credentials / "pki-issuer-secret-id").read_text().strip(),
        )
        ttl = float(env.get("DOORWARD_TLS_CERT_TTL", "86400"))
    except (OSError, ValueError) as exc:
        raise DeployError(
            f"no issuer credentials in {credentials} ({type(exc).__name__}): "
            "run `doorward provision` first"
        ) from None
    if not addr:
        raise DeployError("set DOORWARD_VAULT_ADDR (the Vault holding the doorward-pki mount)")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    folders = {svc: out / svc for svc in SERVICES}
    stack = stack_of(env)
    issuer = CertificateIssuer(addr, creds, [stack.host], ttl, service_hosts=service_hosts(stack))
    renewer = CertificateRenewer(issuer, folders)
    due = renewer.issue_now()
    say(f"service certificates issued into {out} (lifetime {ttl:.0f}s, renewed at 2/3)")
    if once:
        return
    renewer.start(due)
    try:
        (stop or threading.Event()).wait()
    finally:
        renewer.stop()
