"""Composition rejects what Apollo's composition rejects (satisfiability above all), with an
error naming the type, the field and the subgraphs (subgraph sets in tests/compat/rejected.py).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from gateway.composition import CompositionError, compose
from tests.compat.rejected import REJECTED, SUBGRAPHS
from tests.compat.test_apollo_gateway import ensure_node_modules

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def apollo_errors() -> dict[str, list[str]]:
    node_dir = ensure_node_modules().parent
    (node_dir / "compose.mjs").write_bytes(
        (ensure_node_modules().parents[2] / "tests" / "compat" / "compose.mjs").read_bytes()
    )
    request = {
        k: {n: {"url": f"http://{n}.test", "sdl": s} for n, s in v.items()}
        for k, v in SUBGRAPHS.items()
    }
    proc = subprocess.run(
        ["node", "compose.mjs"],
        cwd=node_dir,
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {k: v.get("errors") or [] for k, v in json.loads(proc.stdout).items()}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected_by_both_and_ours_names_type_field_subgraphs(apollo_errors, name):
    assert apollo_errors[name], f"Apollo's composition accepts {name}: the case is wrong"
    with pytest.raises(CompositionError) as exc:
        compose({n: (f"http://{n}.test", s) for n, s in SUBGRAPHS[name].items()})
    text = "\n".join(exc.value.errors)
    for needle in REJECTED[name][1]:
        assert needle in text, (needle, text)
