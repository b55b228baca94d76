"""Vault's Kubernetes auth method for deploy/k8s: who in the cluster may log in as what.

`doorward vault-kubernetes` (with DOORWARD_VAULT_ADDR and a provisioning DOORWARD_VAULT_TOKEN)
enables the method, points it at the cluster's API server (Vault asks it, by TokenReview, whether
a presented service-account token is genuine) and writes two roles:

- `doorward-secrets`: the ServiceAccount doorward-secrets of the namespace, tokens with audience
  `vault` only, policy doorward-secrets (deploy/vault/doorward-secrets.hcl): the secrets
  service's login, replacing the AppRole and its secret id;
- `doorward-cert-issuer`: the ServiceAccount doorward-cert-issuer (cert-manager requests its
  tokens), policy doorward-cert-issuer (deploy/vault/doorward-cert-issuer.hcl): sign CSRs under
  the per-service PKI roles, nothing else.

Run it after `doorward provision` (mounts, the secrets policy, the PKI roles). Idempotent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hvac

from deploy.embedded import POLICY_NAME

MOUNT = "kubernetes"
SECRETS_ROLE = "doorward-secrets"
CERT_ISSUER_ROLE = "doorward-cert-issuer"
CERT_ISSUER_POLICY = "doorward-cert-issuer"
CERT_ISSUER_POLICY_FILE = Path(__file__).parent / "vault" / "doorward-cert-issuer.hcl"
AUDIENCE = "vault"
# Short tokens: the service renews its own, cert-manager logs in per signature.
SECRETS_TOKEN_TTL, SECRETS_TOKEN_MAX_TTL = "1h", "24h"
ISSUER_TOKEN_TTL = "10m"


def provision_kubernetes_auth(
    client: hvac.Client,
    *,
    namespace: str,
    kubernetes_host: str,
    kubernetes_ca_pem: str | None = None,
    outside_cluster: bool = False,
    mount: str = MOUNT,
) -> None:
    """Enable and configure the method at `mount`, write the policy and both roles.

    A Vault inside the cluster reviews tokens with its own pod's service account (the Vault Helm
    chart binds it to system:auth-delegator). `outside_cluster`: Vault has no such account and
    reviews each login with the presented token itself, so the two ServiceAccounts need
    system:auth-delegator (docs/operations.md)."""
    auths: dict[str, Any] = client.sys.list_auth_methods()
    auths = auths.get("data", auths)
    if f"{mount}/" not in auths:
        client.sys.enable_auth_method("kubernetes", path=mount)
    config: dict[str, Any] = {"kubernetes_host": kubernetes_host}
    if kubernetes_ca_pem:
        config["kubernetes_ca_cert"] = kubernetes_ca_pem
    if outside_cluster:
        config["disable_local_ca_jwt"] = True
    client.write(f"auth/{mount}/config", **config)
    client.sys.create_or_update_policy(CERT_ISSUER_POLICY, CERT_ISSUER_POLICY_FILE.read_text())
    roles = {
        SECRETS_ROLE: ([POLICY_NAME], SECRETS_TOKEN_TTL, SECRETS_TOKEN_MAX_TTL),
        CERT_ISSUER_ROLE: ([CERT_ISSUER_POLICY], ISSUER_TOKEN_TTL, ISSUER_TOKEN_TTL),
    }
    for role, (policies, ttl, max_ttl) in roles.items():
        client.write(
            f"auth/{mount}/role/{role}",
            bound_service_account_names=[role],
            bound_service_account_namespaces=[namespace],
            audience=AUDIENCE,
            token_policies=policies,
            token_ttl=ttl,
            token_max_ttl=max_ttl,
            # The token is the pod's; nothing else (no period, no renewal past max_ttl).
            token_no_default_policy=True,
        )
