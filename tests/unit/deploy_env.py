"""Every environment variable a Doorward process or `doorward` command reads: what the compose
file and the Kubernetes manifests may set (a misspelt or renamed variable is silently ignored
at run time, so the tests refuse it here)."""

from __future__ import annotations

from pydantic_settings import BaseSettings

from deploy.supervisor import env_names
from doorward_kit.settings import StackSettings
from gateway.settings import GatewaySettings
from services.audit.settings import AuditSettings
from services.identity.settings import IdentitySettings
from services.secrets.settings import SecretsSettings
from services.traces.settings import TracesSettings
from services.workorders.settings import WorkOrdersSettings

_SETTINGS: tuple[type[BaseSettings], ...] = (
    StackSettings,
    GatewaySettings,
    AuditSettings,
    IdentitySettings,
    SecretsSettings,
    TracesSettings,
    WorkOrdersSettings,
)
# Read by the OpenTelemetry SDK and Python themselves (README "Telemetry").
_OTHERS = {
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
}
# Until the replicas work lands on main (each service at its own address), StackSettings has
# no such fields; the manifests already use its names. Dropped once StackSettings has them.
_PENDING = {
    f"DOORWARD_{svc}_{kind}"
    for svc in ("IDENTITY", "WORKORDERS", "AUDIT", "SECRETS")
    for kind in ("GRPC_ADDRESS", "HTTP_URL")
} | {"DOORWARD_GATEWAY_REPLICAS"}


def known_variables() -> set[str]:
    names = set(_OTHERS) | set(env_names())
    for cls in _SETTINGS:
        prefix = str(cls.model_config.get("env_prefix", ""))
        names |= {f"{prefix}{field}".upper() for field in cls.model_fields if field != "stack"}
    if "identity_grpc_address" not in StackSettings.model_fields:
        names |= _PENDING
    return names
