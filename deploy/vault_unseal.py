"""`doorward vault-unseal`: initialise (on first start) and unseal an OpenBao that something else
runs, e.g. docker-compose.yml's `openbao` container (raft storage, restarts sealed).

For trying Doorward only: the unseal key then sits in a file beside the server (0600, its own
volume), which is exactly what production must not do. Production uses auto-unseal (a cloud KMS,
an HSM, or a transit seal of another Vault) or key shares held by several people: see
docs/operations.md "Vault unseal in production".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import hvac

from deploy.embedded import _write_private
from deploy.errors import DeployError

# GET /v1/sys/health answers with these codes (OpenBao's API reference, sys/health).
ACTIVE, STANDBY, UNINITIALISED, SEALED = 200, 429, 501, 503


def health(addr: str) -> int | None:
    try:
        return httpx.get(f"{addr}/v1/sys/health", timeout=2.0, trust_env=False).status_code
    except httpx.TransportError:
        return None


def init_or_unseal(
    addr: str,
    keys_file: Path,
    *,
    token_file: Path | None = None,
    timeout: float = 60.0,
    echo: Callable[[str], None] = print,
) -> str:
    """Bring the server at `addr` to an unsealed, active (or standby) state; returns what was
    done: "initialised", "unsealed" or "ready". `keys_file` keeps the unseal key (and the initial
    root token, also copied to `token_file` for provisioning). Never prints a key or token."""
    deadline = time.monotonic() + timeout
    done = "ready"
    while True:
        status = health(addr)
        if status in (ACTIVE, STANDBY):
            return done
        if status == UNINITIALISED:
            if keys_file.exists():
                raise DeployError(
                    f"OpenBao at {addr} is uninitialised but {keys_file} exists: its storage "
                    "was lost; restore it (or remove the stale key file to start empty)"
                )
            result = hvac.Client(url=addr).sys.initialize(secret_shares=1, secret_threshold=1)
            # Written first: without this file the data could never be unsealed again.
            _write_private(
                keys_file,
                json.dumps(
                    {"unseal_keys_b64": result["keys_base64"], "root_token": result["root_token"]}
                ),
            )
            if token_file is not None:
                _write_private(token_file, result["root_token"])
            echo(f"OpenBao initialised; unseal key kept in {keys_file} (development only)")
            done = "initialised"
        elif status == SEALED:
            if not keys_file.exists():
                raise DeployError(
                    f"OpenBao at {addr} is sealed and {keys_file} is missing: unseal it with "
                    "`bao operator unseal` and the key shares you hold"
                )
            client = hvac.Client(url=addr)
            for key in json.loads(keys_file.read_text())["unseal_keys_b64"]:
                client.sys.submit_unseal_key(key)
            if done == "ready":
                done = "unsealed"
                echo("OpenBao unsealed")
        if time.monotonic() > deadline:
            raise DeployError(
                f"OpenBao at {addr} was not ready within {timeout:.0f}s (health {status})"
            )
        time.sleep(0.2)
