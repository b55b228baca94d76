"""In-process SDLs of the test subgraphs (no servers) and a supergraph composed from them."""

from __future__ import annotations

import pytest

from gateway.composition import Supergraph, compose
from tests.integration.gateway.subgraphs import accounts, products, reviews


def subgraph_sdls() -> dict[str, tuple[str, str]]:
    out = {}
    for name, mod in (("accounts", accounts), ("products", products), ("reviews", reviews)):
        sdl = mod.schema.execute_sync("{ _service { sdl } }").data["_service"]["sdl"]
        out[name] = (f"http://{name}.test/graphql", sdl)
    return out


@pytest.fixture(scope="session")
def sdls() -> dict[str, tuple[str, str]]:
    return subgraph_sdls()


@pytest.fixture(scope="session")
def supergraph_sdl(sdls) -> str:
    return compose(sdls)


@pytest.fixture(scope="session")
def supergraph(supergraph_sdl) -> Supergraph:
    return Supergraph.from_sdl(supergraph_sdl)
