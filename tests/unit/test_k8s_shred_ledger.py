"""Issue 14, B1: in Kubernetes the shred ledger has a durable home a restore cannot lose: a
volume claim of its own (not a database's, not Vault's), writable by every secrets replica
(ReadWriteMany: the HPA runs several, spread over nodes), mounted where
DOORWARD_SECRETS_SHRED_LEDGER points, as a folder (one file per pod, no shared appends)."""

from __future__ import annotations

import pytest

from tests.unit.test_k8s_manifests import OVERLAYS, _objects, _of

pytestmark = pytest.mark.unit

LEDGER = "/var/lib/doorward/shred-ledger"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_shred_ledger_has_a_volume_of_its_own(overlay: str) -> None:
    objs = _objects(overlay)
    claims = _of(objs, "PersistentVolumeClaim")
    claim = claims["doorward-shred-ledger"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = _of(objs, "Deployment")["secrets"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DOORWARD_SECRETS_SHRED_LEDGER"] == LEDGER
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert not mounts[LEDGER].get("readOnly", False)
    volumes = {v["name"]: v for v in pod["volumes"]}
    source = volumes[mounts[LEDGER]["name"]]["persistentVolumeClaim"]["claimName"]
    assert source == "doorward-shred-ledger"
    # Only secrets mounts it, and no database or Vault volume is this claim.
    users = [
        name
        for kind in ("Deployment", "StatefulSet")
        for name, o in _of(objs, kind).items()
        for v in o["spec"]["template"]["spec"].get("volumes", [])
        if v.get("persistentVolumeClaim", {}).get("claimName") == "doorward-shred-ledger"
    ]
    assert users == ["secrets"]
    cluster = _of(objs, "Cluster")  # CloudNativePG: its storage is its own claim template
    for c in cluster.values():
        assert "doorward-shred-ledger" not in str(c)
