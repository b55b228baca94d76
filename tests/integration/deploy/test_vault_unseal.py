"""`doorward vault-unseal` (docker-compose.yml's openbao-unseal): a raft OpenBao initialised once,
unsealed after every restart, and refused when its storage is gone but a key file is left."""

from __future__ import annotations

import subprocess
from pathlib import Path

import hvac
import pytest

from deploy.embedded import bao_binary, free_port_pair, stop_pid
from deploy.errors import DeployError
from deploy.vault_unseal import init_or_unseal

pytestmark = pytest.mark.integration

_RAFT_CONFIG = """\
api_addr     = "http://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cluster_port}"
storage "raft" {{
  path    = "{raft}"
  node_id = "unseal-test"
  performance_multiplier = 1
}}
listener "tcp" {{
  address         = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable     = true
}}
"""


def _start_bao(root: Path, port: int) -> subprocess.Popen[bytes]:
    config = root / "config.hcl"
    (root / "raft").mkdir(exist_ok=True, mode=0o700)
    config.write_text(_RAFT_CONFIG.format(port=port, cluster_port=port + 1, raft=root / "raft"))
    log = (root / "bao.log").open("ab")
    return subprocess.Popen(
        [bao_binary(), "server", f"-config={config}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_vault_unseal_initialises_once_and_unseals_after_restarts(tmp_path: Path) -> None:
    port = free_port_pair()
    addr = f"http://127.0.0.1:{port}"
    keys, token = tmp_path / "keys" / "unseal.json", tmp_path / "keys" / "root-token"
    keys.parent.mkdir(mode=0o700)
    proc = _start_bao(tmp_path, port)
    try:
        assert init_or_unseal(addr, keys, token_file=token, echo=lambda _: None) == "initialised"
        assert keys.stat().st_mode & 0o777 == 0o600 and token.stat().st_mode & 0o777 == 0o600
        client = hvac.Client(url=addr, token=token.read_text())
        assert client.is_authenticated()
        assert init_or_unseal(addr, keys, echo=lambda _: None) == "ready"
        stop_pid(proc.pid)
        proc.wait(10)
        proc = _start_bao(tmp_path, port)  # raft restarts sealed
        assert init_or_unseal(addr, keys, echo=lambda _: None) == "unsealed"
        assert hvac.Client(url=addr, token=token.read_text()).is_authenticated()
        # Storage lost but a key file left: refused rather than silently starting empty.
        stop_pid(proc.pid)
        proc.wait(10)
        (tmp_path / "raft").rename(tmp_path / "raft.lost")
        proc = _start_bao(tmp_path, port)
        with pytest.raises(DeployError, match="storage"):
            init_or_unseal(addr, keys, timeout=10, echo=lambda _: None)
    finally:
        stop_pid(proc.pid)
        proc.wait(10)
