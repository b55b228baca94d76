# Policy of the secrets service's AppRole: only what it needs, nothing under sys/ but wrapping.
# The secrets service owns this file and may tighten it further.

# Secret values: KV v2 under doorward-kv/ (write, read, soft-delete, destroy versions).
path "doorward-kv/data/*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "doorward-kv/metadata/*" {
  capabilities = ["read", "list", "delete"]
}
path "doorward-kv/delete/*" {
  capabilities = ["update"]
}
path "doorward-kv/destroy/*" {
  capabilities = ["update"]
}

# Transit: per-purpose keys (create, read metadata, delete after allowing it), encryption.
path "doorward-transit/keys/+" {
  capabilities = ["create", "read", "update", "delete"]
}
path "doorward-transit/keys/+/config" {
  capabilities = ["update"]
}
path "doorward-transit/encrypt/+" {
  capabilities = ["update"]
}
path "doorward-transit/decrypt/+" {
  capabilities = ["update"]
}
path "doorward-transit/datakey/+/+" {
  capabilities = ["update"]
}

# Response wrapping: single-use reveal/upload handles.
path "sys/wrapping/unwrap" {
  capabilities = ["update"]
}
path "sys/wrapping/lookup" {
  capabilities = ["update"]
}

# Short-lived child tokens per grant, revoked by accessor when a grant ends.
path "auth/token/create" {
  capabilities = ["update"]
}
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}
path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
