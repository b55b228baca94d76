"""The pure parts of service identity: names, the credentials folder, allow-list tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from doorward.audit.v1 import audit_pb2
from doorward.secrets.v1 import secrets_pb2

from doorward_kit.grpc import InternalAuth, allow_list
from doorward_kit.tls import CredentialFolder, CredentialsError, peer_service, service_from_spiffe
from tests.fixtures.pki import TestCA

pytestmark = pytest.mark.unit


def test_only_doorward_spiffe_ids_of_known_services_name_a_caller() -> None:
    assert service_from_spiffe("spiffe://doorward/identity") == "identity"
    for other in (
        "spiffe://doorward/identity/extra",
        "spiffe://evil/identity",
        "spiffe://doorward/mallory",
        "https://doorward/identity",
    ):
        assert service_from_spiffe(other) is None
    assert peer_service({"peer_spiffe_id": [b"spiffe://doorward/gateway"]}) == "gateway"
    # The common name or a DNS name is never enough.
    assert peer_service({"x509_common_name": [b"identity.doorward.internal"]}) is None


def test_key_and_chain_travel_in_one_private_file(tmp_path: Path) -> None:
    folder = TestCA().install(tmp_path / "svc", "audit")
    assert (tmp_path / "svc").stat().st_mode & 0o777 == 0o700
    assert folder.identity_file.stat().st_mode & 0o777 == 0o600
    material = folder.load()
    assert b"PRIVATE KEY" in material.key_pem and b"PRIVATE KEY" not in material.chain_pem
    before = folder.stamp()
    TestCA().install(tmp_path / "svc", "audit")
    assert folder.stamp() != before  # a renewal is seen


def _kubernetes_secret_volume(folder: Path, key: bytes, chain: bytes, ca: bytes) -> None:
    """What the kubelet does with a kubernetes.io/tls Secret: the files live in a timestamped
    folder, `..data` points at it, each name is a symlink through `..data`; an update writes a
    new folder and swaps `..data` (one rename)."""
    folder.mkdir(exist_ok=True)
    stamp = folder / f"..{len(list(folder.glob('..*_2026')))}_2026"
    stamp.mkdir()
    for name, data in (("tls.key", key), ("tls.crt", chain), ("ca.crt", ca)):
        (stamp / name).write_bytes(data)
    tmp = folder / "..data_tmp"
    tmp.symlink_to(stamp.name)
    tmp.replace(folder / "..data")
    for name in ("tls.key", "tls.crt", "ca.crt"):
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(f"..data/{name}")


def test_a_cert_manager_secret_volume_is_read_and_its_renewal_seen(tmp_path: Path) -> None:
    ca = TestCA()
    key, chain = ca.issue("identity")
    _kubernetes_secret_volume(tmp_path / "tls", key, chain, ca.ca_pem)
    folder = CredentialFolder(tmp_path / "tls")
    material = folder.load()
    assert material.key_pem.strip() == key.strip()
    assert b"PRIVATE KEY" not in material.chain_pem and material.ca_pem == ca.ca_pem
    before = folder.stamp()
    key2, chain2 = ca.issue("identity")
    _kubernetes_secret_volume(tmp_path / "tls", key2, chain2, ca.ca_pem)
    assert folder.stamp() != before
    assert folder.load().key_pem.strip() == key2.strip()
    # Doorward's own layout wins when both are present (nothing is read twice).
    ca.install(tmp_path / "tls", "identity")
    assert folder.load().key_pem.strip() != key2.strip()


def test_a_broken_folder_is_an_error_not_a_crash(tmp_path: Path) -> None:
    folder = CredentialFolder(tmp_path / "nothing")
    with pytest.raises(CredentialsError):
        folder.stamp()
    with pytest.raises(CredentialsError):
        folder.load()
    folder.write(b"junk", b"more junk", b"no certificate")
    with pytest.raises(CredentialsError):
        folder.load()


def test_an_allow_list_names_every_method_and_only_known_services() -> None:
    audit = audit_pb2.DESCRIPTOR.services_by_name["Audit"]
    table = allow_list(audit, {"AppendEvents": {"identity"}, "PruneEvents": set()})
    assert table == {
        "/doorward.audit.v1.Audit/AppendEvents": frozenset({"identity"}),
        "/doorward.audit.v1.Audit/PruneEvents": frozenset(),
    }
    secrets = secrets_pb2.DESCRIPTOR.services_by_name["Secrets"]
    with pytest.raises(ValueError, match="missing"):
        allow_list(secrets, {"IssueGrant": {"workorders"}})  # the other methods forgotten
    with pytest.raises(ValueError, match="unknown services"):
        allow_list(audit, {"AppendEvents": {"mallory"}, "PruneEvents": set()})
    with pytest.raises(ValueError, match="unknown"):
        allow_list(audit, {"AppendEvents": set(), "PruneEvents": set(), "Nope": set()})


def test_insecure_mode_needs_a_token_and_a_known_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        InternalAuth("identity", None)
    with pytest.raises(ValueError):
        InternalAuth("mallory", tmp_path)
    assert not InternalAuth("identity", tmp_path).insecure
    assert "secret" not in repr(InternalAuth("identity", None, "secret"))
