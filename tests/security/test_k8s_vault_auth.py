"""Vault's Kubernetes auth method as deploy/k8s uses it, against the real OpenBao: the secrets
service logs in with a service-account token (no secret id), and only the ServiceAccount,
namespace and audience the role names get in; a forged token does not; cert-manager's role may
only sign.

No cluster runs here: a small stand-in answers the one Kubernetes API call Vault makes, the
TokenReview (authentication.k8s.io/v1), for the tokens it issued."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from deploy.vault_k8s import provision_kubernetes_auth
from doorward_kit.errors import DoorwardError
from services.secrets.vault import AppRoleLogin, KubernetesLogin, VaultGateway
from tests.fixtures.pki import TestCA

pytestmark = pytest.mark.integration

NAMESPACE = "doorward-test"


class FakeKubernetesApi:
    """Issues service-account tokens and answers TokenReviews for them (and only them)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.issued: dict[str, dict[str, Any]] = {}
        self.reviews = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.reviews += 1
                claims = api.issued.get(body["spec"]["token"])
                wanted = set(body["spec"].get("audiences") or [])
                status: dict[str, Any] = {"authenticated": False}
                if claims is not None and (not wanted or wanted & set(claims["aud"])):
                    sa = claims["kubernetes.io"]["serviceaccount"]
                    status = {
                        "authenticated": True,
                        "user": {
                            "username": claims["sub"],
                            "uid": sa["uid"],
                            "groups": ["system:serviceaccounts"],
                        },
                        "audiences": sorted(wanted & set(claims["aud"])) or claims["aud"],
                    }
                answer = json.dumps(
                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                     "status": status}
                ).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def token(self, namespace: str, account: str, audience: str = "vault") -> str:
        now = int(time.time())
        claims = {
            "iss": "https://kubernetes.default.svc",
            "sub": f"system:serviceaccount:{namespace}:{account}",
            "aud": [audience],
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": account, "uid": str(uuid.uuid4())},
                "pod": {"name": f"{account}-0", "uid": str(uuid.uuid4())},
            },
        }
        token = jwt.encode(claims, self.key, algorithm="ES256")
        self.issued[token] = claims
        return token

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubernetesApi]:
    api = FakeKubernetesApi()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="module")
def k8s_mount(openbao, kube) -> str:
    mount = f"kubernetes-{uuid.uuid4().hex[:8]}"
    provision_kubernetes_auth(
        hvac.Client(url=openbao.addr, token=openbao.root_token),
        namespace=NAMESPACE,
        kubernetes_host=kube.url,
        # Required with outside_cluster; unused over the stand-in's plain HTTP.
        kubernetes_ca_pem=TestCA().ca_pem.decode(),
        outside_cluster=True,
        mount=mount,
    )
    return mount


def _gateway(openbao, login) -> VaultGateway:
    return VaultGateway(openbao.addr, login, timeout=5.0, threads=2)


async def test_secrets_logs_in_with_its_service_account_token(
    openbao, kube, k8s_mount, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(kube.token(NAMESPACE, "doorward-secrets"))
    vault = _gateway(openbao, KubernetesLogin("doorward-secrets", token_file, mount=k8s_mount))
    try:
        await vault.login()
        await vault.ensure_seal_key()  # a call the secrets policy allows: the policy is attached
        lookup = await vault.call("lookup", lambda c: c.auth.token.lookup_self()["data"])
        assert lookup["policies"] == ["doorward-secrets"]
        assert lookup["meta"]["service_account_name"] == "doorward-secrets"
        # The kubelet rotates the file: the next login reads the new token.
        reviews = kube.reviews
        token_file.write_text(kube.token(NAMESPACE, "doorward-secrets"))
        root = hvac.Client(url=openbao.addr, token=openbao.root_token)
        root.auth.token.revoke_accessor(lookup["accessor"])
        await vault.ensure_seal_key()  # refused token -> one new login -> retried
        assert kube.reviews == reviews + 1
    finally:
        vault.close()


@pytest.mark.parametrize(
    ("namespace", "account", "audience"),
    [
        (NAMESPACE, "doorward-workorders", "vault"),  # another process of the same namespace
        ("elsewhere", "doorward-secrets", "vault"),  # the right name in another namespace
        (NAMESPACE, "doorward-secrets", "https://kubernetes.default.svc"),  # an API token
    ],
)
async def test_no_other_account_namespace_or_audience_gets_in(
    openbao, kube, k8s_mount, tmp_path: Path, namespace: str, account: str, audience: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(kube.token(namespace, account, audience))
    vault = _gateway(openbao, KubernetesLogin("doorward-secrets", token_file, mount=k8s_mount))
    try:
        with pytest.raises(hvac.exceptions.VaultError):
            await vault.login()
    finally:
        vault.close()


async def test_a_forged_token_is_refused(openbao, kube, k8s_mount, tmp_path: Path) -> None:
    other = FakeKubernetesApi()  # right claims, but the cluster never issued this token
    try:
        token_file = tmp_path / "token"
        token_file.write_text(other.token(NAMESPACE, "doorward-secrets"))
        vault = _gateway(openbao, KubernetesLogin("doorward-secrets", token_file, mount=k8s_mount))
        try:
            with pytest.raises(hvac.exceptions.VaultError):
                await vault.login()
        finally:
            vault.close()
    finally:
        other.close()


async def test_a_missing_token_file_is_unavailable_not_a_crash(openbao, tmp_path: Path) -> None:
    vault = _gateway(openbao, KubernetesLogin("doorward-secrets", tmp_path / "absent"))
    try:
        with pytest.raises(DoorwardError) as caught:
            await vault.login()
        assert "absent" in str(caught.value)
    finally:
        vault.close()


async def test_the_cert_issuer_role_may_only_sign(openbao, kube, k8s_mount) -> None:
    client = hvac.Client(url=openbao.addr)
    result = client.auth.kubernetes.login(
        "doorward-cert-issuer", kube.token(NAMESPACE, "doorward-cert-issuer"),
        use_token=False, mount_point=k8s_mount,
    )
    assert result["auth"]["policies"] == ["doorward-cert-issuer"]
    root = hvac.Client(url=openbao.addr, token=openbao.root_token)
    caps = root.sys.get_capabilities(
        paths=["doorward-pki/sign/identity", "doorward-pki/issue/identity", "doorward-kv/data/orgs/x"],
        token=result["auth"]["client_token"],
    )
    assert caps["doorward-pki/sign/identity"] == ["update"]
    assert caps["doorward-pki/issue/identity"] == ["deny"]
    assert caps["doorward-kv/data/orgs/x"] == ["deny"]


async def test_approle_still_works(openbao) -> None:
    vault = _gateway(openbao, AppRoleLogin(openbao.role_id, SecretStr(openbao.secret_id)))
    try:
        await vault.login()
    finally:
        vault.close()
