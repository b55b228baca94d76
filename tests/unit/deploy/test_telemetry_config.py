"""The production telemetry configuration in deploy/telemetry/ (Collector, Prometheus, alert
rules, Grafana) is checked here because no Collector, Prometheus or Grafana runs on these
machines: every file parses, every PromQL expression parses (promql-parser, Prometheus' own
grammar), every metric it names exists in doorward_kit/metrics.py (or is OpenBao's), and the
Collector's redaction allow-list is exactly the processes' own (doorward_kit/span_policy.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from doorward_kit.metrics import REGISTRY
from doorward_kit.span_policy import ALLOWED_KEYS

pytestmark = pytest.mark.unit

TELEMETRY = Path(__file__).resolve().parents[3] / "deploy" / "telemetry"
METRIC = re.compile(r"\b((?:doorward|vault)_[a-z_]+)\b")
OPENBAO_METRICS = {"vault_audit_log_request_failure", "vault_audit_log_response_failure"}


def _load(name: str) -> Any:
    return yaml.safe_load((TELEMETRY / name).read_text())


def _doorward_series() -> set[str]:
    names: set[str] = set()
    for metric in REGISTRY.collect():
        names.add(metric.name)
        names.update(sample.name for sample in metric.samples)
    # Counters with no sample yet still expose name_total once used.
    names.update(f"{name}_total" for name in list(names))
    for suffix in ("_bucket", "_count", "_sum"):
        names.update(f"{name}{suffix}" for name in list(names))
    return names


def _check_expr(expr: str, where: str) -> None:
    promql_parser.parse(expr)  # raises on a syntax error
    known = _doorward_series() | OPENBAO_METRICS
    for name in METRIC.findall(expr):
        assert name in known, f"{where}: {name} is not a metric Doorward or OpenBao exports"


def test_collector_pipelines_use_defined_components_in_a_safe_order() -> None:
    config = _load("otel-collector.yaml")
    for kind in ("receivers", "processors", "exporters"):
        for pipeline in config["service"]["pipelines"].values():
            for name in pipeline[kind]:
                assert name in config[kind], f"{name} is used but not defined under {kind}"
    for name, pipeline in config["service"]["pipelines"].items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", f"{name}: memory_limiter must come first"
        assert processors[-1] == "batch", f"{name}: batch must come last"
        assert "redaction" in processors, f"{name}: no redaction"


def test_collector_allow_list_is_the_processes_own() -> None:
    redaction = _load("otel-collector.yaml")["processors"]["redaction"]
    assert redaction["allow_all_keys"] is False
    assert set(redaction["allowed_keys"]) == set(ALLOWED_KEYS)
    patterns = [re.compile(p) for p in redaction["blocked_values"]]
    assert any(p.search("ada@example.org") for p in patterns)
    assert any(p.search("+44 20 7946 0000") for p in patterns)
    # Opaque ids must survive: the security-ops filters look them up.
    for opaque in ("550e8400-e29b-41d4-a716-446655440000", "4bf92f3577b34da6a3ce929d0e0e4736"):
        assert not any(p.search(opaque) for p in patterns), opaque


def test_tail_sampling_keeps_every_access_decision() -> None:
    sampling = _load("otel-collector.yaml")["processors"]["tail_sampling"]
    decision = [
        p["string_attribute"]
        for p in sampling["policies"]
        if p["type"] == "string_attribute" and p["string_attribute"]["key"] == "doorward.decision"
    ]
    assert decision and set(decision[0]["values"]) == {"allow", "deny"}


def test_alert_rules_parse_and_name_real_metrics() -> None:
    groups = _load("alerts.yml")["groups"]
    alerts = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    for name, rule in alerts.items():
        _check_expr(rule["expr"], name)
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
    wanted = {
        "SingleUseGrantRevealedTwice",
        "AuditWriteFailures",
        "OpenBaoAuditFailures",
        "TechnicianDenialRatioHigh",
        "VaultSlow",
    }
    assert wanted <= set(alerts)


def test_prometheus_scrapes_every_process_and_loads_the_rules() -> None:
    config = _load("prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    doorward = next(job for job in config["scrape_configs"] if job["job_name"] == "doorward")
    services = {target["labels"]["service"] for target in doorward["static_configs"]}
    assert services == {"gateway", "identity", "workorders", "audit", "secrets"}


def test_the_dashboard_has_both_views_and_real_queries() -> None:
    dashboard = json.loads((TELEMETRY / "grafana" / "doorward-dashboard.json").read_text())
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Access decisions", "Vault health"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            _check_expr(target["expr"], panel["title"])
