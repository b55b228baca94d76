"""The pure parts of `doorward up`: configuration, child environments, port plan, output."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from deploy.embedded import AppRoleCreds
from deploy.errors import DeployError
from deploy.supervisor import (
    SERVICES,
    WAVES,
    Infra,
    UpConfig,
    address_lines,
    check_ports,
    child_env,
    env_names,
    next_step_lines,
    port_plan,
    prefixed,
    read_or_create_secret,
)

pytestmark = pytest.mark.unit

SECRET_ID = "secret-id-value"
TOKEN = "internal-token-value"


def _cfg(tmp_path: Path, **env: str) -> UpConfig:
    return UpConfig.from_env({"DOORWARD_DATA_DIR": str(tmp_path), **env})


def _infra(tmp_path: Path, *, insecure: bool = False) -> Infra:
    return Infra(
        db_urls={svc: f"postgresql+asyncpg://u@/doorward_{svc}?host=/s" for svc in SERVICES},
        vault_addr="http://127.0.0.1:8200",
        approle=AppRoleCreds("role", SECRET_ID),
        internal_token=TOKEN if insecure else None,
        audit_signing_key_file=tmp_path / "keys" / "audit.pem",
        identity_key_dir=tmp_path / "keys" / "identity",
        tls_root=None if insecure else tmp_path / "tls",
    )


def test_defaults(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert cfg.data_dir == tmp_path.resolve()
    assert cfg.vault_port == 8200
    assert cfg.database_url is None and cfg.vault_addr is None
    assert "DOORWARD_DATA_DIR" in env_names() and "DOORWARD_GATEWAY_PORT" in env_names()


def test_start_waves_identity_first_gateway_last() -> None:
    started = [svc for wave in WAVES for svc in wave]
    assert sorted(started) == sorted((*SERVICES, "gateway"))  # each exactly once
    assert WAVES[0] == ("identity",) and WAVES[-1] == ("gateway",)


def test_bad_setting_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="DOORWARD_"):
        _cfg(tmp_path, DOORWARD_VAULT_PORT="eighty")


def test_each_service_gets_only_its_own_credentials(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, DOORWARD_IDENTITY_HTTP_PORT="7001")
    base = {
        "PATH": "/bin",
        "DOORWARD_VAULT_TOKEN": "root",
        "DOORWARD_DATABASE_URL": "pg://x",
        "DOORWARD_INTERNAL_TOKEN": "from-outside",
    }
    envs = {svc: child_env(svc, cfg, _infra(tmp_path), base) for svc in (*SERVICES, "gateway")}
    for svc, env in envs.items():
        assert env["PATH"] == "/bin"
        assert "DOORWARD_VAULT_TOKEN" not in env and "DOORWARD_DATABASE_URL" not in env
        # Its own certificate folder; no shared token under mutual TLS.
        assert env["DOORWARD_TLS_DIR"] == str(tmp_path / "tls" / svc)
        assert "DOORWARD_INTERNAL_TOKEN" not in env
        assert env["DOORWARD_IDENTITY_HTTP_PORT"] == "7001"  # everyone agrees on addresses
        assert ("DOORWARD_VAULT_SECRET_ID" in env) == (svc == "secrets")
        for other in SERVICES:
            assert (f"DOORWARD_{other.upper()}_DB_URL" in env) == (other == svc)
    assert envs["secrets"]["DOORWARD_VAULT_SECRET_ID"] == SECRET_ID
    assert envs["audit"]["DOORWARD_AUDIT_SIGNING_KEY_FILE"].endswith("audit.pem")
    assert envs["identity"]["DOORWARD_IDENTITY_KEY_DIR"].endswith("identity")


def test_another_services_settings_and_the_data_folder_are_not_passed_on(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    base = {
        "DOORWARD_DATA_DIR": str(tmp_path),  # leads to every credential folder
        "DOORWARD_AUDIT_SIGNING_KEY_FILE": "/k/audit.pem",
        "DOORWARD_IDENTITY_ARGON2_TIME_COST": "1",
        "DOORWARD_SECRETS_DB_URL": "postgresql+asyncpg://doorward_secrets:pw@/x",
    }
    for svc in (*SERVICES, "gateway"):
        env = child_env(svc, cfg, _infra(tmp_path), base)
        assert "DOORWARD_DATA_DIR" not in env
        assert ("DOORWARD_IDENTITY_ARGON2_TIME_COST" in env) == (svc == "identity")
        assert env.get("DOORWARD_AUDIT_SIGNING_KEY_FILE") == (
            str(tmp_path / "keys" / "audit.pem") if svc == "audit" else None
        )
        assert ":pw@" not in "".join(env.values())
        # Everybody still finds everybody.
        assert env["DOORWARD_AUDIT_GRPC_PORT"] == "5003"


def test_port_conflicts_name_the_variable(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    plan = port_plan(cfg)
    assert {p.port for p in plan} >= {4000, 4001, 5001, 4004, 5004, 8200, 8201}
    with pytest.raises(DeployError, match="DOORWARD_AUDIT_HTTP_PORT"):
        check_ports("127.0.0.1", plan, lambda host, port: port == 4003)
    check_ports("127.0.0.1", plan, lambda host, port: False)
    clash = _cfg(tmp_path, DOORWARD_AUDIT_GRPC_PORT="4000")
    with pytest.raises(DeployError, match="both set to port 4000"):
        check_ports("127.0.0.1", port_plan(clash), lambda host, port: False)
    external = _cfg(tmp_path, DOORWARD_VAULT_ADDR="https://vault:8200")
    assert 8200 not in {p.port for p in port_plan(external)}


def test_addresses_are_printed_without_secrets(tmp_path: Path) -> None:
    lines = address_lines(_cfg(tmp_path), "pg-where", "vault-where")
    text = "\n".join(lines)
    assert "http://127.0.0.1:4000/graphql" in text
    assert "grpc 127.0.0.1:5004" in text and "secrets REST http://127.0.0.1:4004" in text
    assert SECRET_ID not in text and TOKEN not in text


def test_next_step_is_a_bootstrap_command_for_this_data_folder(tmp_path: Path) -> None:
    default = UpConfig.from_env({"DOORWARD_DATA_DIR": str(tmp_path / ".doorward")})
    lines = next_step_lines(default, ".venv/bin/doorward", cwd=tmp_path)
    assert lines[1].strip().startswith(".venv/bin/doorward bootstrap --org ")
    assert "--admin-email " in lines[1] and "DOORWARD_" not in "".join(lines)
    elsewhere = _cfg(tmp_path / "my data", DOORWARD_DATABASE_URL="postgresql://u:db-pw@h/postgres")
    text = "\n".join(next_step_lines(elsewhere, "doorward", cwd=tmp_path))
    assert f"DOORWARD_DATA_DIR='{tmp_path / 'my data'}' doorward bootstrap" in text
    assert "DOORWARD_DATABASE_URL" in text and "db-pw" not in text


def test_secret_files_are_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "token"
    first = read_or_create_secret(path, lambda: "abc")
    assert read_or_create_secret(path, lambda: "other") == first == "abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_insecure_mode_hands_out_the_shared_token_and_no_certificate(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, DOORWARD_INSECURE_INTERNAL="1")
    env = child_env("identity", cfg, _infra(tmp_path, insecure=True), {"PATH": "/bin"})
    assert env["DOORWARD_INTERNAL_TOKEN"] == TOKEN and "DOORWARD_TLS_DIR" not in env
    assert env["DOORWARD_INSECURE_INTERNAL"] == "True"


def test_insecure_internal_is_refused_in_production(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="DOORWARD_INSECURE_INTERNAL"):
        _cfg(tmp_path, DOORWARD_INSECURE_INTERNAL="1", DOORWARD_ENV="production")


def test_certificate_lifetime_is_bounded(tmp_path: Path) -> None:
    assert _cfg(tmp_path).tls_cert_ttl == 86400
    assert _cfg(tmp_path, DOORWARD_TLS_CERT_TTL="30").tls_cert_ttl == 30
    with pytest.raises(DeployError, match="DOORWARD_TLS_CERT_TTL"):
        _cfg(tmp_path, DOORWARD_TLS_CERT_TTL="1")


def test_prefix() -> None:
    assert prefixed("audit", "hello\n") == "audit      | hello"


def test_reprs_hide_credentials(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path,
        DOORWARD_VAULT_TOKEN="root-token-value",
        DOORWARD_DATABASE_URL="postgresql://u:db-password@h/postgres",
        DOORWARD_VAULT_SECRET_ID=SECRET_ID,
        DOORWARD_INTERNAL_TOKEN=TOKEN,
    )
    text = repr(cfg) + repr(_infra(tmp_path))
    for secret in ("root-token-value", "db-password", SECRET_ID, TOKEN):
        assert secret not in text


def test_the_trace_store_starts_with_identity_and_every_process_exports_to_it(
    tmp_path: Path,
) -> None:
    cfg = _cfg(tmp_path, DOORWARD_TRACES_HTTP_PORT="7318")
    assert cfg.embedded_traces and cfg.waves[0] == ("traces", "identity")
    assert any(p.env == "DOORWARD_TRACES_HTTP_PORT" and p.port == 7318 for p in port_plan(cfg))
    assert any(p.env == "DOORWARD_TRACES_GRPC_PORT" for p in port_plan(cfg))
    infra = _infra(tmp_path)
    for svc in (*SERVICES, "gateway"):
        # Mutual TLS: HTTPS to the receiver with the process's own certificate folder.
        env = child_env(svc, cfg, infra, {})
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "https://127.0.0.1:7318"
        folder = tmp_path / "tls" / svc
        assert env["OTEL_EXPORTER_OTLP_CERTIFICATE"] == str(folder / "ca.pem")
        assert env["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"] == str(folder / "identity.pem")
        assert env["OTEL_EXPORTER_OTLP_CLIENT_KEY"] == str(folder / "identity.pem")
        assert env["OTEL_BSP_SCHEDULE_DELAY"] == "1000"
        insecure = child_env(svc, cfg, _infra(tmp_path, insecure=True), {})
        assert insecure["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:7318"
        assert "OTEL_EXPORTER_OTLP_CLIENT_KEY" not in insecure
    assert child_env("audit", cfg, infra, {})["DOORWARD_AUDIT_TRACE_STORE"] == "1"
    store = child_env("traces", cfg, infra, {})
    assert store["DOORWARD_TLS_DIR"] == str(tmp_path / "tls" / "traces")
    assert store["OTEL_TRACES_EXPORTER"] == "none"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in store


def test_an_external_collector_replaces_the_trace_store(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318")
    assert not cfg.embedded_traces
    assert cfg.waves == WAVES
    assert all(p.env != "DOORWARD_TRACES_HTTP_PORT" for p in port_plan(cfg))
    env = child_env("workorders", cfg, _infra(tmp_path), {"OTEL_EXPORTER_OTLP_ENDPOINT": "x"})
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "x"  # the operator's own, untouched
    assert child_env("audit", cfg, _infra(tmp_path), {})["DOORWARD_AUDIT_TRACE_STORE"] == "0"


def test_gateway_key_pair_private_half_to_the_gateway_only(tmp_path: Path) -> None:
    from dataclasses import replace

    from doorward_kit.gateway_signature import create_key_pair

    private, public = tmp_path / "keys" / "gw.pem", tmp_path / "keys" / "gw.pub.pem"
    create_key_pair(private, public)
    first = private.read_bytes()
    create_key_pair(private, public)  # a second `up` keeps the pair
    assert private.read_bytes() == first
    for path in (private, public):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    infra = replace(
        _infra(tmp_path),
        gateway_signing_key_file=private,
        gateway_public_keys={svc: public for svc in ("identity", "workorders", "audit")},
    )
    base = {"DOORWARD_GATEWAY_SIGNING_KEY_FILE": "/somewhere/else.pem"}
    cfg = _cfg(tmp_path)
    envs = {svc: child_env(svc, cfg, infra, base) for svc in (*SERVICES, "gateway")}
    assert envs["gateway"]["DOORWARD_GATEWAY_SIGNING_KEY_FILE"] == str(private)
    for svc in SERVICES:
        assert "DOORWARD_GATEWAY_SIGNING_KEY_FILE" not in envs[svc]
    for svc in ("identity", "workorders", "audit"):
        assert envs[svc]["DOORWARD_GATEWAY_PUBLIC_KEY_FILE"] == str(public)


def test_the_shred_ledger_lies_beside_the_data_folder_and_only_secrets_gets_it(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    cfg = _cfg(data)
    # Not inside the folder a restore fills: beside it.
    assert cfg.shred_ledger == tmp_path.resolve() / "data.shred-ledger.jsonl"
    assert "DOORWARD_SHRED_LEDGER" in env_names()
    moved = _cfg(data, DOORWARD_SHRED_LEDGER=str(tmp_path / "vault" / "ledger.jsonl"))
    assert moved.shred_ledger == (tmp_path / "vault" / "ledger.jsonl").resolve()
    for svc in (*SERVICES, "gateway"):
        env = child_env(svc, moved, _infra(tmp_path), {})
        assert ("DOORWARD_SECRETS_SHRED_LEDGER" in env) == (svc == "secrets")
    assert child_env("secrets", moved, _infra(tmp_path), {})[
        "DOORWARD_SECRETS_SHRED_LEDGER"
    ] == str(moved.shred_ledger)
def test_replicas_bind_offset_ports_and_everyone_knows_every_replica(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, DOORWARD_REPLICAS="2", DOORWARD_VAULT_NODES="3")
    plan = port_plan(cfg)
    check_ports("127.0.0.1", plan, lambda host, port: False)  # no port twice
    ports = {p.port for p in plan}
    # Replicas at +100 and +200; the public doors and OpenBao's API stay as balancers.
    assert {5101, 5201, 4101, 4201, 4100, 4200, 4000, 4004, 4104, 4204} <= ports
    assert {8200, 8300, 8301, 8400, 8401, 8500, 8501} <= ports
    assert 5001 not in ports and 4001 not in ports
    env = child_env("workorders", cfg, _infra(tmp_path), {}, replica=2)
    assert env["DOORWARD_WORKORDERS_HTTP_PORT"] == "4202"
    assert env["DOORWARD_WORKORDERS_GRPC_PORT"] == "5202"
    assert env["DOORWARD_IDENTITY_GRPC_ADDRESS"] == "127.0.0.1:5101,127.0.0.1:5201"
    assert env["DOORWARD_AUDIT_HTTP_URL"] == "http://127.0.0.1:4103,http://127.0.0.1:4203"
    # Phones and browsers keep using the configured doors (the balancers).
    assert env["DOORWARD_SECRETS_PUBLIC_URL"] == "http://127.0.0.1:4004"
    gateway = child_env("gateway", cfg, _infra(tmp_path), {}, replica=1)
    assert gateway["DOORWARD_GATEWAY_PORT"] == "4100"
    assert gateway["DOORWARD_GATEWAY_REPLICAS"] == "2"
    text = "\n".join(address_lines(cfg, "pg", "vault"))
    assert "127.0.0.1:5101,127.0.0.1:5201" in text


def test_replica_counts_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="DOORWARD_VAULT_NODES"):
        _cfg(tmp_path, DOORWARD_VAULT_NODES="2")
    with pytest.raises(DeployError, match="DOORWARD_REPLICAS"):
        _cfg(tmp_path, DOORWARD_REPLICAS="0")


def test_the_secrets_door_gets_a_metrics_port_of_its_own(tmp_path: Path) -> None:
    # Issue 15: phones reach the door through a reverse proxy (or `--replicas`' balancer), from
    # whose loopback address /metrics would answer anyone; `up` gives it a port of its own.
    cfg = _cfg(tmp_path)
    assert cfg.stack.secrets_metrics_port == 4054
    plan = {p.port: p for p in port_plan(cfg)}
    assert plan[4054].env == "DOORWARD_SECRETS_METRICS_PORT"
    check_ports("127.0.0.1", list(plan.values()), lambda host, port: False)
    env = child_env("secrets", cfg, _infra(tmp_path), {})
    assert env["DOORWARD_SECRETS_METRICS_PORT"] == "4054"
    assert "secrets metrics http://127.0.0.1:4054/metrics" in "\n".join(
        address_lines(cfg, "pg", "vault")
    )
    # The operator's choice wins, and a clash names the variable.
    chosen = _cfg(tmp_path, DOORWARD_SECRETS_METRICS_PORT="9404")
    assert child_env("secrets", chosen, _infra(tmp_path), {})["DOORWARD_SECRETS_METRICS_PORT"] == (
        "9404"
    )
    clash = _cfg(tmp_path, DOORWARD_SECRETS_METRICS_PORT="4001")
    with pytest.raises(DeployError, match="DOORWARD_SECRETS_METRICS_PORT"):
        check_ports("127.0.0.1", port_plan(clash), lambda host, port: False)
    # Replicas: each its own metrics port (Prometheus scrapes every one, no balancer).
    replicas = _cfg(tmp_path, DOORWARD_REPLICAS="2")
    ports = {p.port for p in port_plan(replicas)}
    assert {4154, 4254} <= ports and 4054 not in ports
    check_ports("127.0.0.1", port_plan(replicas), lambda host, port: False)
    second = child_env("secrets", replicas, _infra(tmp_path), {}, replica=2)
    assert second["DOORWARD_SECRETS_METRICS_PORT"] == "4254"
    assert second["DOORWARD_SECRETS_HTTP_PORT"] == "4204"
