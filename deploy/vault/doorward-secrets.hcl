# Policy of the secrets service's AppRole: least privilege, owned by services/secrets.
# Written into the embedded OpenBao by `make up` (deploy/embedded.py provision_vault); works
# unchanged on HashiCorp Vault. Anything not listed here is denied.

# Site secret values: one KV v2 path per secret under orgs/<org>/secrets/<random id>.
# max_wrapping_ttl makes Vault refuse every request on these paths that is NOT response-wrapped
# with a TTL of at most 1h: the service itself can never read a value in the clear, only hand
# out a single-use wrapping token, and no Doorward bug can make such a token live longer.
# (Writes are wrapped too; the service unwraps the write's metadata to learn the version.)
path "doorward-kv/data/orgs/*" {
  capabilities     = ["create", "read", "update"]
  max_wrapping_ttl = "1h"
}
# DeleteSiteSecrets: a metadata delete destroys every version at once. No list, no read.
path "doorward-kv/metadata/orgs/*" {
  capabilities = ["delete"]
}

# The key of enduser.pseudo.id (doorward_kit/pseudonym.py), provisioned once: read only. The
# service hands it to workorders and identity over mutual TLS (secrets PseudonymKey).
path "doorward-kv/data/telemetry/pseudonym-key" {
  capabilities = ["read"]
}

# Customer contact envelope encryption: one transit key per customer, named cust-<opaque id>.
# create/update: create the key and allow its deletion (config); delete: crypto-shredding.
path "doorward-transit/keys/cust-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "doorward-transit/datakey/plaintext/cust-*" {
  capabilities = ["update"]
}
path "doorward-transit/decrypt/cust-*" {
  capabilities = ["update"]
}

# The grant-seal key (derived, context = grant/slot id) seals the wrapping token inside the
# reveal/upload token, so that such a token is useless anywhere but at the secrets service.
path "doorward-transit/keys/grant-seal" {
  capabilities = ["create", "read", "update"]
}
path "doorward-transit/encrypt/grant-seal" {
  capabilities = ["update"]
}
path "doorward-transit/decrypt/grant-seal" {
  capabilities = ["update"]
}

# Response wrapping: upload slots wrap a small binding record; reveals unwrap single-use tokens.
path "sys/wrapping/wrap" {
  capabilities     = ["update"]
  max_wrapping_ttl = "1h"
}
path "sys/wrapping/unwrap" {
  capabilities = ["update"]
}

# Revocation of a grant's / slot's wrapping token by its accessor (the token itself is held
# only by the user). Note: revoke-accessor is not scoped by Vault; it can revoke any token
# whose accessor is known. It cannot read or create anything.
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}
# The service's own token: renewal and introspection.
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
