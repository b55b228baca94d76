"""Issue 15, finding K1: the Kubernetes gateway believed X-Forwarded-For from all of 10/8 while
its port 4000 (and /metrics on it) was reachable from every pod.

Now: only the ingress controller's pods reach the public doors (gateway 4000, secrets 4004);
the trusted-proxy setting names a narrow pool, never the pod network; /metrics of the gateway is
on a port of its own (9400) that only the monitoring namespace reaches, and the public port no
longer serves it. The manifests are checked as rendered (deploy/kustomize.py); the metrics port
against a real gateway server on two sockets.

The same gap on the secrets door (public 4004, phones through the ingress): its /metrics is now
on DOORWARD_SECRETS_METRICS_PORT (9404, monitoring only) and the door answers 404 there; the
kit's runner (doorward_kit.runner.serving) serves the two sockets, as the gateway's CLI does."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.kustomize import render
from doorward_kit.http import create_app as create_service_app
from doorward_kit.net import free_port
from doorward_kit.runner import ServiceParts, serving
from doorward_kit.settings import StackSettings
from gateway.cli import edge_server
from gateway.client_address import client_address, parse_trusted_proxies
from gateway.server import create_app
from gateway.settings import GatewaySettings
from tests.unit.gateway.conftest import sdls, subgraph_sdls, supergraph_sdl

pytestmark = pytest.mark.unit

__all__ = ["sdls", "subgraph_sdls", "supergraph_sdl"]

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (ROOT / "overlays").iterdir() if p.is_dir())
INGRESS = {"namespace": "ingress-nginx", "pods": {"app.kubernetes.io/name": "ingress-nginx"}}
POD_NETWORK = ipaddress.ip_network("10.0.0.0/8")


def _objects(overlay: str) -> list[dict[str, Any]]:
    return list(render(ROOT / "overlays" / overlay))


def _policy(objs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (found,) = [
        o["spec"]
        for o in objs
        if o["kind"] == "NetworkPolicy"
        and o["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
        == component
    ]
    return found


def _rules_for(policy: dict[str, Any], port: int) -> list[dict[str, Any]]:
    return [r for r in policy["ingress"] if port in {p["port"] for p in r.get("ports", [])}]


def _peers(rules: list[dict[str, Any]]) -> list[tuple[str | None, dict[str, str] | None]]:
    """(namespace, pod labels) of every peer; a rule without `from` is (None, None): anyone."""
    out: list[tuple[str | None, dict[str, str] | None]] = []
    for rule in rules:
        if "from" not in rule:
            out.append((None, None))
            continue
        for peer in rule["from"]:
            ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
            pods = peer.get("podSelector", {}).get("matchLabels")
            out.append((ns.get("kubernetes.io/metadata.name"), pods))
    return out


def _gateway_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return _container(objs, "gateway")


def _container(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (deployment,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _stack_config(objs: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [
        o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "doorward-stack"
    ]
    return dict(config["data"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_ingress_controller_reaches_the_public_doors(overlay: str) -> None:
    objs = _objects(overlay)
    for component, port in (("gateway", 4000), ("secrets", 4004)):
        peers = _peers(_rules_for(_policy(objs, component), port))
        # The attack: any other pod (or anyone, a rule without `from`) reaching the port.
        assert (None, None) not in peers, component
        assert peers == [(INGRESS["namespace"], INGRESS["pods"])], (component, peers)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_serves_metrics_on_its_own_port_open_to_monitoring_only(overlay: str) -> None:
    objs = _objects(overlay)
    container = _gateway_container(objs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DOORWARD_GATEWAY_METRICS_PORT"] == str(ports["metrics"])
    assert ports["metrics"] != ports["http"]
    policy = _policy(objs, "gateway")
    assert _peers(_rules_for(policy, ports["metrics"])) == [("monitoring", None)]
    # Nothing else is open on the gateway: the API to the ingress, metrics to monitoring.
    opened = {p["port"] for r in policy["ingress"] for p in r.get("ports", [])}
    assert opened == {ports["http"], ports["metrics"]}
    # The probes stay on the API port (the kubelet's probes are not pod traffic).
    assert container["readinessProbe"]["httpGet"]["port"] == "http"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_secrets_door_serves_metrics_on_its_own_port_open_to_monitoring_only(
    overlay: str,
) -> None:
    objs = _objects(overlay)
    container = _container(objs, "secrets")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DOORWARD_SECRETS_METRICS_PORT"] == str(ports["metrics"])
    assert ports["metrics"] not in (ports["http"], ports["grpc"])
    policy = _policy(objs, "secrets")
    # The honest scraper (namespace monitoring) reaches it, nobody else does.
    assert _peers(_rules_for(policy, ports["metrics"])) == [("monitoring", None)]
    # The door stays the ingress controller's alone: the scraper's rule does not open 4004.
    assert _peers(_rules_for(policy, ports["http"])) == [(INGRESS["namespace"], INGRESS["pods"])]
    # Nothing else is open: the door, metrics, and gRPC (its ALLOWED_CALLERS,
    # tests/unit/test_k8s_manifests.py).
    opened = {p["port"] for r in policy["ingress"] for p in r.get("ports", [])}
    assert opened == {ports["http"], ports["metrics"], ports["grpc"]}
    # Prometheus finds it through the Service, by the port's name.
    (service,) = [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "secrets"]
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert by_name["metrics"]["targetPort"] == "metrics"
    assert by_name["metrics"]["port"] == ports["metrics"]
    assert container["readinessProbe"]["httpGet"]["port"] == "http"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_trusted_proxies_are_a_narrow_pool_never_the_pod_network(overlay: str) -> None:
    config = _stack_config(_objects(overlay))
    networks = parse_trusted_proxies(config["DOORWARD_GATEWAY_TRUSTED_PROXIES"])
    assert networks
    for net in networks:
        assert net.prefixlen >= 16, net
        assert net != POD_NETWORK
    # A pod outside the pool (what any pod was before) forging X-Forwarded-For: its own address.
    assert client_address("10.1.2.3", ["203.0.113.5"], networks) == "10.1.2.3"
    # The ingress controller, from its pool: the client it saw.
    inside = str(next(networks[0].hosts()))
    assert client_address(inside, ["203.0.113.5"], networks) == "203.0.113.5"


# ---- the metrics port, against the real server ------------------------------------------


def test_with_a_metrics_port_the_public_port_serves_no_metrics(
    supergraph_sdl: str, tmp_path: Path
) -> None:
    api_port, metrics_port = free_port(), free_port()
    stack = StackSettings(host="127.0.0.1", metrics_allowed_networks="127.0.0.0/8")
    settings = GatewaySettings(
        stack=stack,
        port=api_port,
        metrics_port=metrics_port,
        auth_enabled=False,
        console_dir=str(tmp_path),
    )
    app = create_app(settings, supergraph_sdl=supergraph_sdl)
    server, sockets = edge_server(app, settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        with httpx.Client(timeout=5, trust_env=False) as client:
            api, metrics = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{metrics_port}"
            # The attack: /metrics through the public port (what the ingress would relay).
            assert client.get(f"{api}/metrics").status_code == 404
            # The honest scrape, on the metrics port.
            scraped = client.get(f"{metrics}/metrics")
            assert scraped.status_code == 200 and "# TYPE" in scraped.text
            # The API still answers on its port, and only there.
            answer = client.post(f"{api}/graphql", json={"query": "{ __typename }"})
            assert answer.status_code == 200 and answer.json()["data"]["__typename"] == "Query"
            assert (
                client.post(f"{metrics}/graphql", json={"query": "{ __typename }"}).status_code
                == 404
            )
            assert client.get(f"{api}/healthz").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        for sock in sockets:
            sock.close()
    assert not thread.is_alive()


def test_without_a_metrics_port_metrics_stay_on_the_api_port_for_loopback_scrapers(
    supergraph_sdl: str, tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    settings = GatewaySettings(
        stack=StackSettings(metrics_allowed_networks="127.0.0.0/8"),
        auth_enabled=False,
        console_dir=str(tmp_path),
    )
    with TestClient(create_app(settings, supergraph_sdl=supergraph_sdl)) as client:
        # The route is there (one machine, `doorward up`): 403 to a stranger (TestClient's peer
        # is "testclient", not an allowed address), where a missing route would be 404.
        assert client.get("/metrics").status_code == 403


# ---- the secrets door's metrics port, against the kit's real server ----------------------


def _door_parts(metrics_port: int | None, api_port: int) -> ServiceParts:
    """The secrets door as build_parts assembles it (create_app edge=True, /metrics only when
    no metrics port is set) with one door route, under the kit's runner."""
    app = create_service_app("doorward-secrets", edge=True, metrics=metrics_port is None)

    @app.get("/v1/door")
    async def door() -> dict[str, str]:
        return {"door": "open"}

    return ServiceParts(
        app=app,
        host="127.0.0.1",
        http_port=api_port,
        metrics_port=metrics_port,
        metrics_allowed_networks="127.0.0.0/8",
    )


async def test_with_a_metrics_port_the_secrets_door_serves_no_metrics() -> None:
    api_port, metrics_port = free_port(), free_port()
    async with (
        serving(_door_parts(metrics_port, api_port), "secrets-edge-test"),
        httpx.AsyncClient(timeout=5, trust_env=False) as client,
    ):
        door, metrics = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{metrics_port}"
        # The attack: /metrics through the door (what the ingress relays from its own address).
        assert (await client.get(f"{door}/metrics")).status_code == 404
        # The honest scrape, on the metrics port, from an allowed network.
        scraped = await client.get(f"{metrics}/metrics")
        assert scraped.status_code == 200 and "# TYPE" in scraped.text
        # The door still answers on its port, and only there.
        assert (await client.get(f"{door}/v1/door")).json() == {"door": "open"}
        assert (await client.get(f"{door}/readyz")).status_code == 200
        assert (await client.get(f"{metrics}/v1/door")).status_code == 404
        assert (await client.get(f"{metrics}/readyz")).status_code == 404
    # Both listening sockets were released with the server (SO_REUSEADDR: a connection's
    # TIME_WAIT does not count, a listener still bound would).
    for port in (api_port, metrics_port):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))


async def test_the_secrets_metrics_port_still_refuses_strangers() -> None:
    api_port, metrics_port = free_port(), free_port()
    parts = _door_parts(metrics_port, api_port)
    parts = dataclasses.replace(parts, metrics_allowed_networks="192.0.2.0/24")
    async with (
        serving(parts, "secrets-edge-test"),
        httpx.AsyncClient(timeout=5, trust_env=False) as client,
    ):
        # A port of its own is the first wall; the scrapers' networks are still the second.
        assert (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).status_code == 403


async def test_without_a_metrics_port_the_secrets_door_keeps_metrics_for_loopback() -> None:
    api_port = free_port()
    async with (
        serving(_door_parts(None, api_port), "secrets-edge-test"),
        httpx.AsyncClient(timeout=5, trust_env=False) as client,
    ):
        # One machine without a reverse proxy: the old behaviour, loopback scrapers only.
        assert (await client.get(f"http://127.0.0.1:{api_port}/metrics")).status_code == 200


def test_the_secrets_metrics_port_setting() -> None:
    assert StackSettings().secrets_metrics_port is None
    assert StackSettings(secrets_metrics_port=9404).secrets_metrics_port == 9404
