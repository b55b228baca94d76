"""The gateway's request duration per operation name: recorded for every answer, with a label
set clients cannot grow without bound."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from doorward_kit.metrics import render
from doorward_kit.settings import StackSettings
from gateway.server import OperationLabels, create_app
from gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit


def test_operation_labels_are_bounded_names() -> None:
    labels = OperationLabels(limit=2)
    assert labels.label({"operationName": None}) == "anonymous"
    assert labels.label({}) == "anonymous"
    assert labels.label([]) == "anonymous"
    assert labels.label({"operationName": "a@b.example"}) == "invalid"
    assert labels.label({"operationName": "x" * 49}) == "invalid"
    # A name is a label only once admitted (a signed-in caller's operation) ...
    assert labels.label({"operationName": "Board"}) == "other"
    labels.admit("Board")
    labels.admit("a@b.example")  # (never a name that is not one)
    assert labels.label({"operationName": "Board"}) == "Board"
    labels.admit("Me")
    assert labels.label({"operationName": "Me"}) == "Me"
    # ... and only the first `limit` of them: later ones are "other"; known names stay.
    labels.admit("Minted1")
    assert labels.label({"operationName": "Minted1"}) == "other"
    assert labels.label({"operationName": "Board"}) == "Board"


class _Principal:
    user_id = "u-metrics"


async def _authenticate(authorization: str | None) -> object:
    if authorization != "Bearer good":
        raise PermissionError("no valid token")
    return _Principal()


def test_strangers_cannot_pin_the_operation_labels(supergraph_sdl: str, tmp_path: Path) -> None:
    """D1: 250 names sent without a valid token (refused, or a public sign-in mutation) take no
    label, so the set still has room and a signed-in caller's operation is named."""
    settings = GatewaySettings(stack=StackSettings(), auth_enabled=True,
                               console_dir=str(tmp_path))  # type: ignore[arg-type]
    app = create_app(settings, authenticator=_authenticate, supergraph_sdl=supergraph_sdl)
    with TestClient(app) as client:
        for n in range(125):
            client.post("/graphql", json={"query": f"query Junk{n} {{ __typename }}",
                                          "operationName": f"Junk{n}"})
            client.post("/graphql", json={
                "query": f'mutation Login{n} {{ login(username: "x") }}',
                "operationName": f"Login{n}"})
        answer = client.post("/graphql", headers={"authorization": "Bearer good"},
                             json={"query": "query SignedInProbe { __typename }",
                                   "operationName": "SignedInProbe"})
        assert answer.status_code == 200
    text = render("")[0].decode()
    assert 'doorward_gateway_request_duration_seconds_count{operation="SignedInProbe"}' in text
    assert "Junk0" not in text and "Login0" not in text
    assert 'doorward_gateway_request_duration_seconds_count{operation="other"}' in text


def test_every_answer_is_timed_by_operation(supergraph_sdl: str, tmp_path: Path) -> None:
    settings = GatewaySettings(stack=StackSettings(), auth_enabled=False,
                               console_dir=str(tmp_path))  # type: ignore[arg-type]
    with TestClient(create_app(settings, supergraph_sdl=supergraph_sdl)) as client:
        answer = client.post("/graphql", json={"query": "query MetricsProbe { __typename }",
                                               "operationName": "MetricsProbe"})
        assert answer.status_code == 200
        refused = client.post("/graphql", json={"query": "{", "operationName": "BrokenProbe"})
        assert refused.status_code == 400
    text = render("")[0].decode()
    assert 'doorward_gateway_request_duration_seconds_count{operation="MetricsProbe"}' in text
    # A document that did not even parse gets no label of its own.
    assert 'operation="BrokenProbe"' not in text
