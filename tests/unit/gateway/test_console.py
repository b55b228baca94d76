"""The gateway serves the console at `/` with a strict CSP, caches only hashed assets, never
lets a /graphql answer be stored, and answers CORS only to the origins it is told (both sides)."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from doorward_kit.cors import parse_origins
from doorward_kit.settings import StackSettings
from gateway.server import create_app
from gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

SECRETS = "https://secrets.example.com"


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text('<!doctype html><script type="module" '
                                         'src="/assets/index-abc.js"></script>')
    (tmp_path / "assets" / "index-abc.js").write_text("console.log('hi')")
    (tmp_path.parent / "outside.txt").write_text("not served")
    return tmp_path


def client(supergraph_sdl: str, console_dir: Path, **extra: object) -> TestClient:
    stack = StackSettings(gateway_public_url="https://doorward.example.com",
                          secrets_public_url=SECRETS)
    settings = GatewaySettings(stack=stack, auth_enabled=False, console_dir=str(console_dir),
                               **extra)  # type: ignore[arg-type]
    return TestClient(create_app(settings, supergraph_sdl=supergraph_sdl))


def test_console_page_has_a_strict_csp(supergraph_sdl, dist):
    with client(supergraph_sdl, dist) as c:
        page = c.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert f"connect-src 'self' {SECRETS}" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-content-type-options"] == "nosniff"


def test_hashed_assets_are_immutable_and_nothing_else_is_served(supergraph_sdl, dist):
    with client(supergraph_sdl, dist) as c:
        asset = c.get("/assets/index-abc.js")
        assert asset.status_code == 200
        assert "immutable" in asset.headers["cache-control"]
        for path in ("/assets/../index.html", "/assets/%2e%2e/%2e%2e/outside.txt",
                     "/assets/missing.js", "/assets/"):
            assert c.get(path).status_code == 404, path


def test_a_missing_build_says_how_to_build_it(supergraph_sdl, tmp_path):
    with client(supergraph_sdl, tmp_path / "nothing") as c:
        page = c.get("/")
        assert c.get("/healthz").status_code == 200  # the API still runs
    assert page.status_code == 503
    assert "npm ci" in page.text and "make up" in page.text


def test_graphql_answers_are_never_stored(supergraph_sdl, dist):
    with client(supergraph_sdl, dist) as c:
        answer = c.post("/graphql", content=b"not json")
    assert answer.status_code == 400
    assert answer.headers["cache-control"] == "no-store"


def preflight(c: TestClient, origin: str):
    return c.options("/graphql", headers={"origin": origin,
                                          "access-control-request-method": "POST",
                                          "access-control-request-headers": "authorization"})


def test_cors_allows_the_console_origin_by_default_and_nobody_else(supergraph_sdl, dist):
    with client(supergraph_sdl, dist) as c:
        ok = preflight(c, "https://doorward.example.com")
        evil = preflight(c, "https://evil.example.net")
        simple = c.post("/graphql", content=b"{}", headers={"origin": "https://evil.example.net"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://doorward.example.com"
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in ok.headers
    assert evil.status_code == 400
    assert "access-control-allow-origin" not in evil.headers
    assert "access-control-allow-origin" not in simple.headers


def test_cors_origins_are_configurable(supergraph_sdl, dist):
    with client(supergraph_sdl, dist, cors_origins="https://app.partner.example") as c:
        partner = preflight(c, "https://app.partner.example")
        console = preflight(c, "https://doorward.example.com")
    assert partner.headers["access-control-allow-origin"] == "https://app.partner.example"
    assert "access-control-allow-origin" not in console.headers


def test_origin_lists_refuse_wildcards_and_empty_means_none():
    assert parse_origins("", ["https://a.example"]) == []
    assert parse_origins(None, ["https://a.example"]) == ["https://a.example"]
    assert parse_origins(" https://B.example/x , http://c:8080 ", []) == [
        "https://b.example", "http://c:8080"]
    with pytest.raises(ValueError):
        parse_origins("*", [])
    with pytest.raises(ValueError):
        parse_origins("not a url", [])
