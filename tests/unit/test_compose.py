"""docker-compose.yml: valid against the Compose specification's JSON schema (the copy vendored
in check-jsonschema, pinned in uv.lock: offline), and the stack the issue asks for: OpenBao on
raft storage (not dev mode), every Doorward process its own container at its own address with
only its own credentials, the telemetry stack wired to the files in deploy/telemetry."""

from __future__ import annotations

import copy
import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from doorward_kit.settings import StackSettings
from tests.unit.deploy_env import known_variables

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = {"gateway": 4000, "identity": 4001, "workorders": 4002, "audit": 4003, "secrets": 4004}
GRPC = {"identity": 5001, "workorders": 5002, "audit": 5003, "secrets": 5004}


def _schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def _errors(doc: dict[str, Any]) -> list[str]:
    schema = _schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_the_compose_file_validates_against_the_compose_specification() -> None:
    assert _errors(_compose()) == []


def test_the_schema_catches_a_typo() -> None:
    doc = copy.deepcopy(_compose())
    doc["services"]["gateway"]["healtcheck"] = {}
    assert _errors(doc)


def test_openbao_keeps_its_data_in_raft_storage_not_dev_mode() -> None:
    doc = _compose()
    bao = doc["services"]["openbao"]
    assert not any("-dev" in part for part in bao["command"])
    config = doc["configs"]["openbao-config"]["content"]
    assert 'storage "raft"' in config and 'audit "file"' in config
    (data,) = [v for v in bao["volumes"] if v.startswith("openbao-data:")]
    assert data.split(":")[1] in config
    # Nothing carries a root token in the file; the services get no Vault token at all.
    text = (ROOT / "docker-compose.yml").read_text()
    assert "root-token-id" not in text and "DOORWARD_VAULT_TOKEN:" not in text


def test_every_process_is_its_own_container_at_its_own_address() -> None:
    services = _compose()["services"]
    for name in (*PROCESSES, "init", "certs"):
        assert "network_mode" not in services[name], name
    for name in PROCESSES:
        env = services[name]["environment"]
        assert env["DOORWARD_HOST"] == "0.0.0.0"
        for other, port in GRPC.items():
            assert env[f"DOORWARD_{other.upper()}_GRPC_ADDRESS"] == f"{other}:{port}"
            assert env[f"DOORWARD_{other.upper()}_HTTP_URL"] == f"http://{other}:{PROCESSES[other]}"
        # Ready means /readyz, as on Kubernetes.
        assert f"127.0.0.1:{PROCESSES[name]}/readyz" in " ".join(services[name]["healthcheck"]["test"])
    defaults = StackSettings()
    for svc, port in GRPC.items():
        assert getattr(defaults, f"{svc}_grpc_port") == port


def test_each_process_mounts_only_its_own_credentials() -> None:
    services = _compose()["services"]
    for name in PROCESSES:
        mounts = [m for m in services[name]["volumes"] if isinstance(m, dict)]
        for mount in mounts:
            if mount["source"] in {"credentials", "tls"}:
                assert mount["volume"]["subpath"] == name, name
                assert mount["read_only"] is True, name
        assert {m["source"] for m in mounts} >= {"credentials", "tls"}, name
        env = services[name]["environment"]
        # Credentials come from the process's own folder, never from the file.
        assert not any(key.endswith(("_SECRET_ID", "_PASSWORD", "_TOKEN")) for key in env), name


def test_the_telemetry_stack_is_wired_to_deploy_telemetry() -> None:
    services = _compose()["services"]
    assert {"otel-collector", "jaeger", "prometheus", "grafana"} <= set(services)
    for name in ("otel-collector", "prometheus", "grafana"):
        for mount in services[name]["volumes"]:
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), source
    for name in PROCESSES:
        endpoint = services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint == "http://otel-collector:4318"
    scraped = yaml.safe_load((ROOT / "deploy/telemetry/prometheus.yml").read_text())
    targets = {
        t.split(":")[0]
        for job in scraped["scrape_configs"]
        for group in job["static_configs"]
        for t in group["targets"]
    }
    assert targets <= set(services), targets - set(services)
    # The secrets door's /metrics is on its own port (issue 15): Prometheus scrapes that one,
    # and it is not published to the host.
    (secrets,) = [
        t
        for job in scraped["scrape_configs"]
        for group in job["static_configs"]
        for t in group["targets"]
        if t.startswith("secrets:")
    ]
    port = services["secrets"]["environment"]["DOORWARD_SECRETS_METRICS_PORT"]
    assert secrets == f"secrets:{port}" and port != str(PROCESSES["secrets"])
    assert not any(f":{port}" in str(p) for p in services["secrets"].get("ports", []))


def test_every_variable_the_file_sets_is_one_doorward_reads() -> None:
    known = known_variables()
    for name, service in _compose()["services"].items():
        if service.get("image") != "doorward:dev":
            continue  # PostgreSQL's own variables, ...
        env = service.get("environment") or {}
        unknown = {k for k in env if k not in known}
        assert not unknown, f"{name}: {sorted(unknown)}"
