"""The only Vault client in Doorward: AppRole or Kubernetes login, token renewal, KV v2,
wrapping, transit.

hvac is synchronous: every call runs in a small thread pool (one hvac.Client per thread, one
shared service token). Every call gets its own span named after the operation, with no
attributes: the requests instrumentation adds the URL, whose path holds only opaque ids
(orgs/<org uuid>/secrets/<random hex>, cust-<uuid>, grant-seal) and never a token or value.

Failures map to DoorwardError: a sealed or unreachable Vault is UNAVAILABLE; a refused token
(expired, revoked, Vault restarted) triggers one re-login and one retry, so the service recovers
by itself when Vault is back.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
from opentelemetry import propagate
from pydantic import SecretStr

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.metrics import VAULT_REQUEST_SECONDS
from doorward_kit.pseudonym import PSEUDONYM_KEY_PATH
from doorward_kit.telemetry import tracer

log = logging.getLogger(__name__)

T = TypeVar("T")

VAULT_UNAVAILABLE = "the vault is sealed or unreachable"
SEAL_KEY = "grant-seal"
# The KV write's own response (metadata only) is wrapped because the policy forces wrapping.
_WRITE_WRAP_TTL = 60

# Trace-context headers sent to Vault (never baggage: it could carry anything).
_TRACE_HEADERS = ("traceparent", "tracestate")

_DOWN = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    hvac.exceptions.VaultDown,
    hvac.exceptions.VaultNotInitialized,
    hvac.exceptions.BadGateway,
    hvac.exceptions.InternalServerError,
)


class VaultFailure(DoorwardError):
    """Vault sealed, unreachable or failing: a DoorwardError whose decision reason is
    `vault_error` (doorward_kit.decisions), so a grant or reveal span says why it failed."""

    reason = "vault_error"


class VaultRejected(Exception):
    """Vault answered 400/404 for a request: e.g. a used, expired or revoked wrapping token, a
    check-and-set mismatch, an absent key. Carries Vault's message, which holds no value."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


@dataclass(frozen=True)
class Wrapped:
    token: str
    accessor: str
    ttl: int

    def __repr__(self) -> str:  # the token is a bearer credential: never print it
        return f"Wrapped(accessor={self.accessor!r}, ttl={self.ttl})"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class AppRoleLogin:
    """AppRole: a role id and a secret id handed to the process (`doorward up`, provision)."""

    def __init__(self, role_id: str, secret_id: SecretStr) -> None:
        self._role_id = role_id
        self._secret_id = secret_id

    def __call__(self, client: hvac.Client) -> dict[str, Any]:
        result: dict[str, Any] = client.auth.approle.login(
            self._role_id, self._secret_id.get_secret_value(), use_token=False
        )
        return result


class KubernetesLogin:
    """Vault's Kubernetes auth method: the pod's service-account token (a projected token with
    audience `vault`) is the credential, so no secret id exists anywhere. The file is read at
    every login because the kubelet rotates it; Vault checks it with a TokenReview and binds it
    to the Vault role's service account and namespace."""

    def __init__(self, role: str, token_file: Path, *, mount: str = "kubernetes") -> None:
        self._role = role
        self._token_file = token_file
        self._mount = mount

    def __call__(self, client: hvac.Client) -> dict[str, Any]:
        try:
            jwt = self._token_file.read_text().strip()
        except OSError as exc:
            # Names the file, never its content.
            raise DoorwardError(
                ErrorCode.UNAVAILABLE, f"no service-account token at {self._token_file}"
            ) from exc
        result: dict[str, Any] = client.auth.kubernetes.login(
            self._role, jwt, use_token=False, mount_point=self._mount
        )
        return result


VaultLogin = Callable[[hvac.Client], dict[str, Any]]


class VaultGateway:
    def __init__(
        self,
        addr: str,
        login: VaultLogin,
        *,
        kv_mount: str = "doorward-kv",
        transit_mount: str = "doorward-transit",
        timeout: float = 5.0,
        threads: int = 8,
    ) -> None:
        self._addr = addr
        self._authenticate = login
        self.kv_mount = kv_mount
        self.transit_mount = transit_mount
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vault")
        self._local = threading.local()
        self._login_lock = threading.Lock()
        self._token: str | None = None
        self._token_generation = 0
        self._lease_seconds = 0
        self._seal_key_ready = False
        self._tracer = tracer(__name__)

    # ---- plumbing -------------------------------------------------------------------------

    def _client(self) -> hvac.Client:
        client: hvac.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = hvac.Client(url=self._addr, timeout=self._timeout)
            self._local.client = client
        client.token = self._token
        return client

    def _login(self, seen_generation: int) -> None:
        """Log in (AppRole or Kubernetes) unless another thread already did since
        `seen_generation`."""
        with self._login_lock:
            if self._token is not None and self._token_generation != seen_generation:
                return
            client = hvac.Client(url=self._addr, timeout=self._timeout)
            result = self._authenticate(client)
            self._token = str(result["auth"]["client_token"])
            self._lease_seconds = int(result["auth"].get("lease_duration") or 0)
            self._token_generation += 1
            log.info("logged in to vault", extra={"fields": {"ttl_seconds": self._lease_seconds}})

    def _run(self, what: str, fn: Callable[[hvac.Client], T]) -> T:
        """In a pool thread: log in if needed, call, re-login once on a refused token."""
        generation = self._token_generation
        if self._token is None:
            self._login(generation)
            generation = self._token_generation
        try:
            return fn(self._client())
        except hvac.exceptions.Forbidden:
            # Our token expired or Vault lost it (restart): log in again and retry once.
            self._login(generation)
            try:
                return fn(self._client())
            except hvac.exceptions.Forbidden:
                log.error("vault refused the secrets service", extra={"fields": {"op": what}})
                raise VaultFailure(
                    ErrorCode.INTERNAL, "the vault refused the secrets service"
                ) from None

    def _traced(self, fn: Callable[[hvac.Client], T]) -> Callable[[hvac.Client], T]:
        """`fn` with this span's W3C trace context on every request it sends: OpenBao writes
        the audited `traceparent` header (provisioned by deploy/embedded.py) into its audit
        log, so the audit line of an unwrap names the trace of the reveal. The client is this
        pool thread's own: setting its session headers races with nobody."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)

        def run(client: hvac.Client) -> T:
            headers = client.session.headers
            for name in _TRACE_HEADERS:
                headers.pop(name, None)
            headers.update({k: v for k, v in carrier.items() if k in _TRACE_HEADERS})
            return fn(client)

        return run

    async def call(self, what: str, fn: Callable[[hvac.Client], T]) -> T:
        with (
            self._tracer.start_as_current_span(f"vault.{what}"),
            VAULT_REQUEST_SECONDS.time(operation=what),
        ):
            loop = asyncio.get_running_loop()
            fn = self._traced(fn)
            try:
                # Copy the context so the requests spans are children of this one.
                context = contextvars.copy_context()
                return await loop.run_in_executor(self._pool, context.run, self._run, what, fn)
            except DoorwardError:
                raise
            except _DOWN as error:
                log.warning(
                    "vault unavailable",
                    extra={"fields": {"op": what, "error": type(error).__name__}},
                )
                raise VaultFailure(ErrorCode.UNAVAILABLE, VAULT_UNAVAILABLE) from None
            except hvac.exceptions.InvalidPath as error:
                raise VaultRejected(_vault_message(error), not_found=True) from None
            except hvac.exceptions.InvalidRequest as error:
                raise VaultRejected(_vault_message(error)) from None
            except hvac.exceptions.VaultError as error:
                log.error(
                    "vault call failed",
                    extra={"fields": {"op": what, "error": type(error).__name__}},
                )
                raise VaultFailure(ErrorCode.INTERNAL, "the vault call failed") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- lifecycle ------------------------------------------------------------------------

    async def login(self) -> None:
        generation = self._token_generation
        with self._tracer.start_as_current_span("vault.login"):
            try:
                context = contextvars.copy_context()
                await asyncio.get_running_loop().run_in_executor(
                    self._pool, context.run, self._login, generation
                )
            except _DOWN:
                raise VaultFailure(ErrorCode.UNAVAILABLE, VAULT_UNAVAILABLE) from None

    async def renew_forever(self, *, min_interval: float = 5.0) -> None:
        """Background task: renew the service token at half its TTL; log in again if needed."""
        while True:
            interval = max(min_interval, self._lease_seconds / 2 if self._lease_seconds else 60.0)
            await asyncio.sleep(interval)
            try:
                await self.renew_once()
            except DoorwardError as error:
                log.warning(
                    "vault token renewal failed; retrying",
                    extra={"fields": {"code": error.code.value}},
                )
                await asyncio.sleep(min_interval)

    async def renew_once(self) -> int:
        """Renew the token; when it cannot grow any more (max TTL), log in again."""

        def renew(client: hvac.Client) -> int:
            result = client.auth.token.renew_self()
            return int(result["auth"].get("lease_duration") or 0)

        if self._token is None:
            await self.login()
            return self._lease_seconds
        previous = self._lease_seconds
        lease = await self.call("renew_self", renew)
        self._lease_seconds = lease
        if previous and lease < previous / 2:
            # Near the role's max TTL: a fresh login gives a full-length token.
            await self.login()
        return self._lease_seconds

    async def healthy(self) -> bool:
        """Unauthenticated health: active and unsealed."""

        def probe() -> bool:
            try:
                response = requests.get(
                    f"{self._addr}/v1/sys/health", timeout=min(2.0, self._timeout)
                )
            except requests.RequestException:
                return False
            return response.status_code == 200

        return await asyncio.get_running_loop().run_in_executor(self._pool, probe)

    # ---- KV v2 ----------------------------------------------------------------------------

    async def kv_write(self, path: str, value: str, *, cas: int) -> int:
        """Write a new version (check-and-set against `cas`); returns the new version number."""
        mount = self.kv_mount

        def write(client: hvac.Client) -> int:
            wrapped = client.adapter.post(
                f"/v1/{mount}/data/{path}",
                json={"data": {"value": value}, "options": {"cas": cas}},
                wrap_ttl=_WRITE_WRAP_TTL,
            )
            metadata = client.sys.unwrap(wrapped["wrap_info"]["token"])
            return int(metadata["data"]["version"])

        return await self.call("kv_write", write)

    async def kv_read_wrapped(self, path: str, version: int, ttl: int) -> Wrapped:
        """A single-use wrapping token holding version `version`, alive for `ttl` seconds."""
        mount = self.kv_mount

        def read(client: hvac.Client) -> Wrapped:
            response = client.adapter.get(
                f"/v1/{mount}/data/{path}", params={"version": version}, wrap_ttl=f"{ttl}s"
            )
            return _wrapped(response)

        return await self.call("kv_read_wrapped", read)

    async def kv_destroy(self, path: str) -> None:
        """Delete the metadata: every version is destroyed."""
        mount = self.kv_mount

        def destroy(client: hvac.Client) -> None:
            client.adapter.delete(f"/v1/{mount}/metadata/{path}")

        await self.call("kv_destroy", destroy)

    # ---- wrapping -------------------------------------------------------------------------

    async def wrap(self, payload: dict[str, str], ttl: int) -> Wrapped:
        def wrap(client: hvac.Client) -> Wrapped:
            return _wrapped(client.sys.wrap(payload=payload, ttl=f"{ttl}s"))

        return await self.call("wrap", wrap)

    async def unwrap(self, token: str) -> dict[str, Any]:
        """The wrapped response's data. Vault itself refuses a used/expired/revoked token."""

        def unwrap(client: hvac.Client) -> dict[str, Any]:
            return dict(client.sys.unwrap(token)["data"])

        return await self.call("unwrap", unwrap)

    async def revoke_accessor(self, accessor: str) -> bool:
        """Revoke a wrapping token by accessor; False if Vault no longer has it."""

        def revoke(client: hvac.Client) -> None:
            client.adapter.post("/v1/auth/token/revoke-accessor", json={"accessor": accessor})

        try:
            await self.call("revoke_accessor", revoke)
        except VaultRejected:
            return False
        return True

    # ---- telemetry ------------------------------------------------------------------------

    async def pseudonym_key(self) -> bytes:
        """The key of enduser.pseudo.id (provisioned by deploy/embedded.py)."""
        path = f"/v1/{self.kv_mount}/data/{PSEUDONYM_KEY_PATH}"

        def read(client: hvac.Client) -> bytes:
            return base64.b64decode(client.adapter.get(path)["data"]["data"]["key"])

        return await self.call("pseudonym_key", read)

    # ---- transit: token sealing -----------------------------------------------------------

    async def ensure_seal_key(self) -> None:
        mount = self.transit_mount

        def ensure(client: hvac.Client) -> None:
            try:
                client.adapter.get(f"/v1/{mount}/keys/{SEAL_KEY}")
            except hvac.exceptions.InvalidPath:
                client.adapter.post(f"/v1/{mount}/keys/{SEAL_KEY}", json={"derived": True})

        await self.call("ensure_seal_key", ensure)
        self._seal_key_ready = True

    async def seal(self, context: str, plaintext: str) -> str:
        """Encrypt under the derived grant-seal key, bound to `context` (a grant or slot id)."""
        mount = self.transit_mount
        if not self._seal_key_ready:
            await self.ensure_seal_key()

        def seal(client: hvac.Client) -> str:
            result = client.adapter.post(
                f"/v1/{mount}/encrypt/{SEAL_KEY}",
                json={"plaintext": _b64(plaintext), "context": _b64(context)},
            )
            return str(result["data"]["ciphertext"])

        return await self.call("seal", seal)

    async def unseal(self, context: str, ciphertext: str) -> str:
        mount = self.transit_mount

        def unseal(client: hvac.Client) -> str:
            result = client.adapter.post(
                f"/v1/{mount}/decrypt/{SEAL_KEY}",
                json={"ciphertext": ciphertext, "context": _b64(context)},
            )
            return base64.b64decode(result["data"]["plaintext"]).decode()

        return await self.call("unseal", unseal)

    # ---- transit: customer data keys ------------------------------------------------------

    async def data_key(self, key_name: str) -> tuple[bytes, bytes, int]:
        """(plaintext, wrapped ciphertext, key version); creates the customer's key if new."""
        mount = self.transit_mount

        def create(client: hvac.Client) -> tuple[bytes, bytes, int]:
            try:
                client.adapter.get(f"/v1/{mount}/keys/{key_name}")
            except hvac.exceptions.InvalidPath:
                client.adapter.post(f"/v1/{mount}/keys/{key_name}", json={})
            result = client.adapter.post(f"/v1/{mount}/datakey/plaintext/{key_name}", json={})
            data = result["data"]
            return (
                base64.b64decode(data["plaintext"]),
                str(data["ciphertext"]).encode(),
                int(data["key_version"]),
            )

        return await self.call("datakey", create)

    async def decrypt_data_key(self, key_name: str, ciphertext: bytes) -> tuple[bytes, int]:
        mount = self.transit_mount

        def decrypt(client: hvac.Client) -> tuple[bytes, int]:
            result = client.adapter.post(
                f"/v1/{mount}/decrypt/{key_name}", json={"ciphertext": ciphertext.decode()}
            )
            return base64.b64decode(result["data"]["plaintext"]), _key_version(ciphertext)

        return await self.call("decrypt_datakey", decrypt)

    async def key_created(self, key_name: str) -> datetime | None:
        """When the transit key's first version was made; None if there is no such key."""
        mount = self.transit_mount

        def read(client: hvac.Client) -> datetime | None:
            try:
                result = client.adapter.get(f"/v1/{mount}/keys/{key_name}")
            except hvac.exceptions.InvalidPath:
                return None
            # Symmetric keys answer {version: unix time of its creation}.
            times = [int(v) for v in (result["data"].get("keys") or {}).values()]
            return datetime.fromtimestamp(min(times), UTC) if times else None

        return await self.call("key_created", read)

    async def destroy_key(self, key_name: str) -> bool:
        """Allow deletion, then delete. False if the key did not exist (already destroyed)."""
        mount = self.transit_mount

        def destroy(client: hvac.Client) -> bool:
            try:
                client.adapter.post(
                    f"/v1/{mount}/keys/{key_name}/config", json={"deletion_allowed": True}
                )
            except (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath):
                return False
            client.adapter.delete(f"/v1/{mount}/keys/{key_name}")
            return True

        return await self.call("destroy_key", destroy)


def _wrapped(response: Any) -> Wrapped:
    info = response["wrap_info"]
    return Wrapped(token=str(info["token"]), accessor=str(info["accessor"]), ttl=int(info["ttl"]))


def _key_version(ciphertext: bytes) -> int:
    # "vault:v<N>:..." names the key version that wrapped it.
    try:
        return int(ciphertext.split(b":", 2)[1].lstrip(b"v"))
    except (IndexError, ValueError):
        return 0


def _vault_message(error: hvac.exceptions.VaultError) -> str:
    errors = getattr(error, "errors", None)
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)[:200]
    return type(error).__name__
