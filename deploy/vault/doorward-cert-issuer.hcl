# Policy of cert-manager's Vault login on Kubernetes (Vault role `doorward-cert-issuer`, bound to
# the ServiceAccount doorward-cert-issuer): it may have the internal CA sign a CSR under one
# service's PKI role, nothing else. Each role (deploy/pki.py) allows only that service's names
# (<svc>.doorward.internal, spiffe://doorward/<svc>), so a CSR for another name is refused.
# Written by `doorward vault-kubernetes` (deploy/vault_k8s.py); anything not listed is denied.
path "doorward-pki/sign/gateway"    { capabilities = ["update"] }
path "doorward-pki/sign/identity"   { capabilities = ["update"] }
path "doorward-pki/sign/workorders" { capabilities = ["update"] }
path "doorward-pki/sign/audit"      { capabilities = ["update"] }
path "doorward-pki/sign/secrets"    { capabilities = ["update"] }
path "doorward-pki/sign/traces"     { capabilities = ["update"] }
