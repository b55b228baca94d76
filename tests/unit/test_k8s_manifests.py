"""deploy/k8s: every overlay renders (deploy/kustomize.py), every built-in object validates
against the Kubernetes schemas (kubernetes-validate, offline, strict: unknown fields fail), and
the rules the issue sets hold for every workload: probes, resources, HPA, PDB, ServiceAccount,
non-root read-only containers, Vault's Kubernetes auth, NetworkPolicies that allow exactly the
calls of the architecture (checked against each gRPC server's ALLOWED_CALLERS)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from deploy.kustomize import KustomizeError, pod_specs, render

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (ROOT / "overlays").iterdir() if p.is_dir())
K8S_VERSION = "1.33"
SERVICES = ("gateway", "identity", "workorders", "audit", "secrets", "traces")
GRPC_PORTS = {"identity": 5001, "workorders": 5002, "audit": 5003, "secrets": 5004, "traces": 5005}
# Kinds of operators (CRDs): no schema ships with kubernetes-validate; their fields are
# checked below against the operators' API references instead.
CRDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "Database"),
}


@functools.cache
def _rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(ROOT / "overlays" / overlay))


def _objects(overlay: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_rendered(overlay)))


def _of(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def test_there_are_overlays_for_external_postgres_and_cloudnativepg() -> None:
    assert {"external-postgres", "cloudnativepg"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    objs = _objects(overlay)
    failures = []
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    assert not failures, failures
    unknown = {(o["apiVersion"], o["kind"]) for o in objs if "k8s.io" not in o["apiVersion"]}
    unknown -= CRDS
    unknown -= {
        (o["apiVersion"], o["kind"])
        for o in objs
        if o["apiVersion"] in {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2"}
    }
    assert not unknown, f"kinds nobody validates: {unknown}"


def test_the_validation_catches_a_typo() -> None:
    deployment = copy.deepcopy(_of(_objects("external-postgres"), "Deployment")["identity"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches: []\n")
    with pytest.raises(KustomizeError, match="patches"):
        render(tmp_path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_and_image_reach_every_object(overlay: str) -> None:
    objs = _objects(overlay)
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "doorward", obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "doorward"
        for pod in pod_specs(obj):
            for container in pod["containers"]:
                assert container["image"] == "registry.example.com/doorward:0.1.0"


def _containers(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for obj in objs:
        for pod in pod_specs(obj):
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                yield obj["metadata"]["name"], pod, container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_non_root_read_only_and_bounded(overlay: str) -> None:
    for name, pod, container in _containers(_objects(overlay)):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True, name
        assert ctx["allowPrivilegeEscalation"] is False, name
        assert ctx["capabilities"]["drop"] == ["ALL"], name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_has_probes_autoscaling_a_budget_and_its_own_account(overlay: str) -> None:
    objs = _objects(overlay)
    deployments = _of(objs, "Deployment")
    assert set(deployments) == set(SERVICES)
    hpas, pdbs = _of(objs, "HorizontalPodAutoscaler"), _of(objs, "PodDisruptionBudget")
    accounts, services = _of(objs, "ServiceAccount"), _of(objs, "Service")
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        # The HPA owns the replica count; a fixed one here would fight it on every apply.
        assert "replicas" not in spec, name
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
        assert pod["serviceAccountName"] == f"doorward-{name}"
        assert accounts[f"doorward-{name}"]["automountServiceAccountToken"] is False
        hpa = hpas[name]["spec"]
        assert hpa["scaleTargetRef"]["name"] == name and hpa["minReplicas"] >= 1
        assert pdbs[name]["spec"]["selector"] == spec["selector"]
        assert services[name]["spec"]["selector"] == spec["selector"]["matchLabels"]
        if name != "traces":
            assert hpa["minReplicas"] >= 2, f"{name}: one replica is no availability"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_secrets_talks_to_vault_and_with_kubernetes_auth(overlay: str) -> None:
    objs = _objects(overlay)
    for name, _pod, container in _containers(objs):
        env = {e["name"]: e for e in container.get("env", [])}
        assert "DOORWARD_VAULT_SECRET_ID" not in env and "DOORWARD_VAULT_TOKEN" not in env, name
        if name == "secrets":
            assert env["DOORWARD_VAULT_AUTH"]["value"] == "kubernetes"
    pod = _of(objs, "Deployment")["secrets"]["spec"]["template"]["spec"]
    (projected,) = [v["projected"] for v in pod["volumes"] if "projected" in v]
    (source,) = projected["sources"]
    # A token only Vault accepts (audience), short-lived, rotated by the kubelet.
    assert source["serviceAccountToken"]["audience"] == "vault"
    assert source["serviceAccountToken"]["expirationSeconds"] <= 3600


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_with_internal_grpc_gets_a_vault_pki_certificate(overlay: str) -> None:
    objs = _objects(overlay)
    certificates, issuers = _of(objs, "Certificate"), _of(objs, "Issuer")
    for svc in ("gateway", "identity", "workorders", "audit", "secrets", "traces"):
        cert = certificates[f"doorward-{svc}"]["spec"]
        assert set(cert) <= {
            "secretName", "commonName", "dnsNames", "uris", "duration", "renewBefore",
            "privateKey", "usages", "issuerRef",
        }
        assert cert["uris"] == [f"spiffe://doorward/{svc}"]
        assert cert["dnsNames"] == [f"{svc}.doorward.internal"]
        issuer = issuers[cert["issuerRef"]["name"]]["spec"]["vault"]
        assert issuer["path"] == f"doorward-pki/sign/{svc}"
        assert set(issuer["auth"]) == {"kubernetes"}, "no AppRole or token for cert-manager"
        pod = _of(objs, "Deployment")[svc]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == cert["secretName"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_trace_stores_read_api_is_wired_for_audit(overlay: str) -> None:
    """Traces in the graph on Kubernetes: the store serves its gRPC read API (5005) with its
    own certificate through a headless Service, and audit dials that Service; the Vault policy
    of cert-manager may sign the store's certificate."""
    objs = _objects(overlay)
    pod = _of(objs, "Deployment")["traces"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 4318, "grpc": 5005}
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["DOORWARD_TLS_DIR"] == mounts["tls"]
    service = _of(objs, "Service")["traces-grpc"]["spec"]
    assert service["clusterIP"] == "None" and service["ports"][0]["port"] == 5005
    stack = _of(objs, "ConfigMap")["doorward-stack"]["data"]
    assert stack["DOORWARD_TRACES_GRPC_ADDRESS"] == "traces-grpc:5005"
    policy = (ROOT.parent / "vault" / "doorward-cert-issuer.hcl").read_text()
    assert 'path "doorward-pki/sign/traces"' in policy


# ---- NetworkPolicies --------------------------------------------------------------------


def _component(selector: dict[str, Any]) -> str | None:
    return selector.get("matchLabels", {}).get("app.kubernetes.io/component")


def _policies(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        _component(p["spec"]["podSelector"]) or "": p["spec"]
        for p in objs
        if p["kind"] == "NetworkPolicy" and _component(p["spec"]["podSelector"])
    }


def _ingress_sources(policy: dict[str, Any], port: int) -> set[str] | None:
    """Components allowed in on `port`; None when anyone may come in."""
    sources: set[str] = set()
    for rule in policy.get("ingress", []):
        if port not in {p["port"] for p in rule.get("ports", [])}:
            continue
        if "from" not in rule:
            return None
        for peer in rule["from"]:
            if "podSelector" in peer and "namespaceSelector" not in peer:
                sources.add(_component(peer["podSelector"]) or "?")
            elif "namespaceSelector" in peer:
                ns = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                sources.add(f"namespace:{ns}")
            else:
                sources.add("?")
    return sources


def _allowed_callers() -> dict[str, set[str]]:
    from services.audit.api.grpc import ALLOWED_CALLERS as AUDIT
    from services.identity.api.grpc import ALLOWED_CALLERS as IDENTITY
    from services.secrets.api.grpc import ALLOWED_CALLERS as SECRETS
    from services.traces.api.grpc import ALLOWED_CALLERS as TRACES
    from services.workorders.api.grpc import ALLOWED_CALLERS as WORKORDERS

    tables = {
        "identity": IDENTITY,
        "workorders": WORKORDERS,
        "audit": AUDIT,
        "secrets": SECRETS,
        "traces": TRACES,
    }
    return {svc: set().union(*table.values()) for svc, table in tables.items()}


def test_grpc_ingress_is_exactly_the_allowed_callers_of_each_server() -> None:
    objs = _objects("external-postgres")
    policies = _policies(objs)
    for svc, callers in _allowed_callers().items():
        assert _ingress_sources(policies[svc], GRPC_PORTS[svc]) == callers, svc
        # ... and each caller may dial out to it, nobody else.
        dialers = {
            name
            for name, policy in policies.items()
            for rule in policy.get("egress", [])
            if GRPC_PORTS[svc] in {p["port"] for p in rule.get("ports", [])}
            and any(_component(peer.get("podSelector", {})) == svc for peer in rule["to"])
        }
        assert dialers == callers, svc


def test_everything_else_is_denied_and_only_the_public_doors_are_open() -> None:
    objs = _objects("external-postgres")
    deny = _of(objs, "NetworkPolicy")["doorward-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    policies = _policies(objs)
    # The public doors: through the ingress controller only (tests/security/test_k8s_edge.py).
    assert _ingress_sources(policies["gateway"], 4000) == {"namespace:ingress-nginx"}
    assert _ingress_sources(policies["secrets"], 4004) == {"namespace:ingress-nginx"}
    # Their GET /metrics, each on a port of its own: Prometheus only.
    assert _ingress_sources(policies["gateway"], 9400) == {"namespace:monitoring"}
    assert _ingress_sources(policies["secrets"], 9404) == {"namespace:monitoring"}
    assert _ingress_sources(policies["workorders"], 4002) == {"gateway", "namespace:monitoring"}
    assert _ingress_sources(policies["audit"], 4003) == {"gateway", "namespace:monitoring"}
    assert _ingress_sources(policies["identity"], 4001) == {
        "gateway", "workorders", "secrets", "audit", "traces", "namespace:monitoring",
    }
    # The OTLP receiver: every Doorward process exports to it, Prometheus scrapes it; nobody
    # else (no stranger's spans). Its gRPC (5005): exactly its ALLOWED_CALLERS (audit reads,
    # workorders' purge sets retention), nobody else.
    assert _ingress_sources(policies["traces"], 4318) == {
        "gateway", "identity", "workorders", "secrets", "audit", "namespace:monitoring",
    }
    assert _ingress_sources(policies["traces"], 5005) == _allowed_callers()["traces"]
    # Vault: secrets only.
    vault_clients = {
        name
        for name, policy in policies.items()
        for rule in policy.get("egress", [])
        if 8200 in {p["port"] for p in rule.get("ports", [])}
    }
    assert vault_clients == {"secrets"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_processes_with_a_database_reach_postgresql(overlay: str) -> None:
    objs = _objects(overlay)
    (policy,) = [p for p in objs if p["kind"] == "NetworkPolicy" and p["metadata"]["name"] == "doorward-postgres"]
    (expr,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert "gateway" not in expr["values"]
    assert {"identity", "workorders", "audit", "secrets", "traces"} <= set(expr["values"])


def test_cloudnativepg_declares_the_least_privilege_roles() -> None:
    objs = _objects("cloudnativepg")
    (cluster,) = _of(objs, "Cluster").values()
    roles = {r["name"]: r for r in cluster["spec"]["managed"]["roles"]}
    for svc in ("identity", "workorders", "audit", "secrets", "traces"):
        role = roles[f"doorward_{svc}"]
        assert role["login"] is True and role["passwordSecret"]["name"] == f"doorward-{svc}-db"
        assert not {"superuser", "createdb", "createrole", "replication", "bypassrls"} & {
            k for k, v in role.items() if v is True
        }
    assert roles["doorward_audit_owner"]["login"] is False
    assert roles["doorward_audit"]["inRoles"] == ["doorward_audit_writer"]
    databases = {d["spec"]["name"]: d["spec"] for d in _of(objs, "Database").values()}
    assert databases["doorward_audit"]["owner"] == "doorward_audit_owner"
    assert databases["doorward_identity"]["owner"] == "doorward_identity"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_doorward_variable_set_is_one_doorward_reads(overlay: str) -> None:
    from tests.unit.deploy_env import known_variables

    known = known_variables()
    objs = _objects(overlay)
    names = {k for cm in _of(objs, "ConfigMap").values() for k in cm.get("data", {})}
    names |= {e["name"] for _n, _p, c in _containers(objs) for e in c.get("env", [])}
    ours = {n for n in names if n.startswith(("DOORWARD_", "OTEL_"))}
    assert ours - known == set()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_non_root_user_can_read_what_is_mounted_for_it(overlay: str) -> None:
    # Secret files belong to root and the pod's fsGroup: without the group bit uid 10001 could
    # not read its own certificate, and nothing else may read them.
    for obj in _objects(overlay):
        for pod in pod_specs(obj):
            for volume in pod.get("volumes", []):
                source = volume.get("secret") or volume.get("projected")
                if source is None:
                    continue
                mode = source.get("defaultMode", 0o644)
                assert mode & 0o040, f"{obj['metadata']['name']}/{volume['name']}"
                assert not mode & 0o022, f"{obj['metadata']['name']}/{volume['name']}"
            if "volumes" in pod and any("secret" in v for v in pod["volumes"]):
                assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
