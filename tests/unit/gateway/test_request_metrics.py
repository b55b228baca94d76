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
    assert labels.label({"operationName": "Board"}) == "Board"
    assert labels.label({"operationName": None}) == "anonymous"
    assert labels.label({}) == "anonymous"
    assert labels.label([]) == "anonymous"
    assert labels.label({"operationName": "a@b.example"}) == "invalid"
    assert labels.label({"operationName": "x" * 49}) == "invalid"
    assert labels.label({"operationName": "Me"}) == "Me"
    # The third distinct name and every later one: "other"; known names stay themselves.
    assert labels.label({"operationName": "Minted1"}) == "other"
    assert labels.label({"operationName": "Board"}) == "Board"


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
    assert 'doorward_gateway_request_duration_seconds_count{operation="BrokenProbe"}' in text
