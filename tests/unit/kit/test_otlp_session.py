"""The OTLP exporters' requests session reads the environment once, not on every export (with
requests' trust_env every export looked for ~/.netrc and re-read the proxy variables), and
still honours what the operator set: proxies, NO_PROXY, REQUESTS_CA_BUNDLE where no OTLP
certificate is named, and the OTLP certificate over REQUESTS_CA_BUNDLE."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import requests.sessions
import requests.utils
from requests.adapters import BaseAdapter

from doorward_kit.telemetry import otlp_session

pytestmark = pytest.mark.unit

URL = "http://collector.example:4318/v1/traces"


class Recorder(BaseAdapter):
    """Answers every request with 200 and keeps what requests handed the transport."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, Any]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append({"auth": request.headers.get("Authorization"), **kwargs})
        response = requests.Response()
        response.status_code = 200
        response.request = request
        return response

    def close(self) -> None:
        return None


def session_with(recorder: Recorder, verify: bool | str = True) -> requests.Session:
    session = otlp_session()
    session.verify = verify  # what the exporter's transport sets
    session.mount("http://", recorder)
    session.mount("https://", recorder)
    return session


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


def test_no_netrc_and_the_environment_read_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine collector.example login someone password hunter2\n")
    monkeypatch.setenv("NETRC", str(netrc))
    looked_up: list[str] = []
    real = requests.utils.get_environ_proxies

    def counting(url: str, no_proxy: str | None = None) -> dict[str, str]:
        looked_up.append(url)
        return real(url, no_proxy=no_proxy)

    monkeypatch.setattr(requests.utils, "get_environ_proxies", counting)
    recorder = Recorder()
    session = session_with(recorder)
    for _ in range(5):
        assert session.post(URL, data=b"spans").status_code == 200
    assert [s["auth"] for s in recorder.sent] == [None] * 5  # no netrc credentials sent
    assert looked_up == [URL]  # the proxy variables: once
    # The honest counterpart: a plain requests session does send the netrc credentials.
    plain = requests.Session()
    plain.mount("http://", recorder)
    plain.post(URL, data=b"spans")
    assert recorder.sent[-1]["auth"] is not None


def test_the_operators_proxy_and_no_proxy_still_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    recorder = Recorder()
    session_with(recorder).post(URL, data=b"spans")
    assert recorder.sent[-1]["proxies"]["http"] == "http://proxy.example:3128"
    monkeypatch.setenv("NO_PROXY", "collector.example")
    recorder = Recorder()
    session_with(recorder).post(URL, data=b"spans")
    assert "http" not in recorder.sent[-1]["proxies"]


def test_the_otlp_certificate_wins_over_requests_ca_bundle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/other-ca.pem")
    recorder = Recorder()
    session_with(recorder, verify="/doorward/ca.pem").post(URL, data=b"spans")
    assert recorder.sent[-1]["verify"] == "/doorward/ca.pem"
    # No OTLP certificate: the operator's bundle, as requests reads it.
    recorder = Recorder()
    session_with(recorder).post(URL, data=b"spans")
    assert recorder.sent[-1]["verify"] == "/etc/other-ca.pem"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    recorder = Recorder()
    session_with(recorder).post(URL, data=b"spans")
    assert recorder.sent[-1]["verify"] is True
