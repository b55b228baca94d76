"""The `doorward` command. Other modules add their commands here (e.g. `app.add_typer(...)`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """Doorward: run the stack and administer it."""
    # A callback keeps typer in multi-command mode even while `up` is the only command.


@app.command()
def up(
    replicas: int | None = typer.Option(
        None, help="processes of every service and of the gateway (DOORWARD_REPLICAS)"
    ),
    vault_nodes: int | None = typer.Option(
        None, help="nodes of the embedded OpenBao raft cluster: 1, 3 or 5 (DOORWARD_VAULT_NODES)"
    ),
) -> None:
    """Run the whole stack in the foreground (configured by DOORWARD_* variables; Ctrl-C stops)."""
    from deploy.supervisor import run_up

    env = dict(os.environ)
    if replicas is not None:
        env["DOORWARD_REPLICAS"] = str(replicas)
    if vault_nodes is not None:
        env["DOORWARD_VAULT_NODES"] = str(vault_nodes)
    raise typer.Exit(run_up(env))


@app.command()
def provision(
    out: Path = typer.Option(..., help="folder for the credential files (created 0700)"),
) -> None:
    """Prepare an external PostgreSQL and Vault (DOORWARD_DATABASE_URL, DOORWARD_VAULT_ADDR,
    DOORWARD_VAULT_TOKEN) and write the services' credential files into OUT."""
    from deploy.errors import DeployError
    from deploy.provision import provision as run

    try:
        run(out, os.environ, typer.echo)
    except DeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def certs(
    credentials: Path = typer.Option(..., help="the folder `doorward provision` wrote"),
    out: Path = typer.Option(..., help="certificates go to OUT/<process>/ (0700)"),
    once: bool = typer.Option(False, help="issue once and exit instead of renewing"),
) -> None:
    """Issue every process its mutual-TLS certificate from Vault's doorward-pki engine
    (DOORWARD_VAULT_ADDR, DOORWARD_TLS_CERT_TTL) and keep renewing them (Ctrl-C stops); what
    `doorward up` does itself, for stacks something else runs."""
    import signal
    import threading

    from deploy.errors import DeployError
    from deploy.pki import run_certs

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        run_certs(out, credentials, os.environ, typer.echo, once=once, stop=stop)
    except DeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def service_db_url(env: Mapping[str, str], svc: str) -> str:
    """Where `make up` keeps a service's database: on DOORWARD_DATABASE_URL's server (with that
    login), else in the embedded PostgreSQL of the data folder (its unix socket lives in its
    folder), as the service's own login, whose password `up` keeps in its credentials folder."""
    from deploy.embedded import database_url

    server = env.get("DOORWARD_DATABASE_URL")
    if server:
        return database_url(server, f"doorward_{svc}")
    data = Path(env.get("DOORWARD_DATA_DIR", ".doorward")).expanduser().resolve()
    password_file = data / "credentials" / svc / "db-password"
    password = password_file.read_text().strip() if password_file.exists() else ""
    return (
        f"postgresql+asyncpg://doorward_{svc}:{password}@/doorward_{svc}?host={data / 'postgres'}"
    )


def identity_db_url(env: Mapping[str, str]) -> str:
    return service_db_url(env, "identity")


@app.command()
def bootstrap(
    org: str = typer.Option(..., "--org", help="the organisation's name"),
    admin_email: str = typer.Option(..., "--admin-email", help="the first ADMIN's login"),
) -> None:
    """Create an organisation and its first ADMIN (password from standard input; prints the
    admin's TOTP secret when the organisation requires MFA). Refuses to run twice per org."""
    from services.identity.cli import run_bootstrap

    os.environ.setdefault("DOORWARD_IDENTITY_DB_URL", identity_db_url(os.environ))
    code = run_bootstrap(
        org, admin_email, echo=typer.echo, echo_err=lambda line: typer.echo(line, err=True)
    )
    raise typer.Exit(code)


@app.command()
def trace(
    reference: str = typer.Argument(..., help="a trace id (32 hex digits) or an audit event id"),
) -> None:
    """Print a trace's span tree from the embedded trace store (DOORWARD_TRACES_DB_URL, else
    the stack of DOORWARD_DATABASE_URL / DOORWARD_DATA_DIR, as `up` runs it)."""
    from services.traces.cli import run_trace

    env = os.environ
    code = run_trace(
        reference,
        env.get("DOORWARD_TRACES_DB_URL") or service_db_url(env, "traces"),
        env.get("DOORWARD_AUDIT_DB_URL") or service_db_url(env, "audit"),
        typer.echo,
    )
    raise typer.Exit(code)


@app.command("vault-unseal")
def vault_unseal(
    keys: Path = typer.Option(..., help="file keeping the unseal key (0600; created on init)"),
    token_file: Path | None = typer.Option(
        None, help="on first init, also write the initial root token here (0600)"
    ),
    timeout: float = typer.Option(60.0, help="seconds to wait for the server"),
) -> None:
    """Initialise (first start) and unseal the OpenBao at DOORWARD_VAULT_ADDR, for
    docker-compose.yml. Development only: production unseals with auto-unseal or key shares
    (docs/operations.md)."""
    from deploy.errors import DeployError
    from deploy.vault_unseal import init_or_unseal

    addr = os.environ.get("DOORWARD_VAULT_ADDR")
    if not addr:
        typer.echo("error: DOORWARD_VAULT_ADDR is not set", err=True)
        raise typer.Exit(1)
    try:
        init_or_unseal(addr, keys, token_file=token_file, timeout=timeout, echo=typer.echo)
    except DeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("vault-kubernetes")
def vault_kubernetes(
    namespace: str = typer.Option("doorward", help="the namespace deploy/k8s is applied in"),
    kubernetes_host: str = typer.Option(
        ..., help="the cluster's API server as Vault reaches it (https://...)"
    ),
    kubernetes_ca: Path | None = typer.Option(None, help="PEM of the API server's CA"),
    outside_cluster: bool = typer.Option(
        False, help="Vault runs outside the cluster (reviews tokens with the presented token)"
    ),
) -> None:
    """Set up Vault's Kubernetes auth method for deploy/k8s (DOORWARD_VAULT_ADDR,
    DOORWARD_VAULT_TOKEN): the roles of the secrets service and of cert-manager."""
    import hvac

    from deploy.vault_k8s import provision_kubernetes_auth

    addr, token = os.environ.get("DOORWARD_VAULT_ADDR"), os.environ.get("DOORWARD_VAULT_TOKEN")
    if not addr or not token:
        typer.echo("error: DOORWARD_VAULT_ADDR and DOORWARD_VAULT_TOKEN are required", err=True)
        raise typer.Exit(1)
    provision_kubernetes_auth(
        hvac.Client(url=addr, token=token),
        namespace=namespace,
        kubernetes_host=kubernetes_host,
        kubernetes_ca_pem=kubernetes_ca.read_text() if kubernetes_ca else None,
        outside_cluster=outside_cluster,
    )
    typer.echo(f"Vault Kubernetes auth: doorward-secrets, doorward-cert-issuer in {namespace}")


from services.audit.verify import audit_app  # noqa: E402 - `doorward audit verify` (audit's)

app.add_typer(audit_app, name="audit")

from gateway.cli import gateway_app  # noqa: E402 - `doorward gateway compose|serve` (gateway's)

app.add_typer(gateway_app, name="gateway")


@gateway_app.command("schema")
def gateway_schema(
    out: Path | None = typer.Option(None, help="write the SDL here instead of stdout"),
) -> None:
    """Print the public API schema (SDL) that frontend teams generate types from; no process
    needs to run. `schema.graphql` at the repository root is its committed snapshot."""
    from deploy.schema import api_schema_sdl

    sdl = api_schema_sdl()
    if out is not None:
        out.write_text(sdl)
    else:
        typer.echo(sdl, nl=False)


backup_app = typer.Typer(no_args_is_help=True, help="Encrypted backups that restore (issue 14).")
app.add_typer(backup_app, name="backup")

_KEY_FILE = typer.Option(
    None, "--key-file", help="file holding the archive key (else DOORWARD_BACKUP_KEY)"
)


def _backup_errors(run: object) -> None:
    from deploy.errors import DeployError

    try:
        run()  # type: ignore[operator]
    except DeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@backup_app.command("create")
def backup_create(
    output: Path = typer.Option(..., "--output", help="the archive to write (must not exist)"),
    key_file: Path | None = _KEY_FILE,
) -> None:
    """Dump every service database, then take an OpenBao raft snapshot, into one encrypted,
    checksummed archive (run beside `doorward up`, same DOORWARD_DATA_DIR)."""
    from deploy.backup.ops import create, read_key

    _backup_errors(
        lambda: create(output, read_key(key_file, os.environ, output), os.environ, typer.echo)
    )


@backup_app.command("verify")
def backup_verify(
    archive: Path = typer.Argument(..., help="the archive"),
    key_file: Path | None = _KEY_FILE,
) -> None:
    """Check an archive without restoring it: every byte authenticated, every member's
    checksum, every database dump readable."""
    from deploy.backup.ops import read_key, verify

    _backup_errors(lambda: verify(archive, read_key(key_file, os.environ), typer.echo))
    typer.echo("archive OK")


@backup_app.command("restore")
def backup_restore(
    archive: Path = typer.Argument(..., help="the archive"),
    key_file: Path | None = _KEY_FILE,
    shred_ledger: Path | None = typer.Option(
        None,
        "--shred-ledger",
        help="the ledger (file or folder) to replay (default: DOORWARD_SHRED_LEDGER, else beside "
        "DOORWARD_DATA_DIR)",
    ),
    without_ledger: bool = typer.Option(
        False,
        "--without-shred-ledger",
        help="restore although there is no shred ledger (only if the stack never had one)",
    ),
) -> None:
    """Fill the empty DOORWARD_DATA_DIR from an archive, replay the shred ledger; then
    `doorward up` starts from it. Refuses a non-empty folder and a damaged archive."""
    from deploy.backup.ops import read_key
    from deploy.backup.restore import restore

    _backup_errors(
        lambda: restore(
            archive,
            read_key(key_file, os.environ),
            os.environ,
            typer.echo,
            shred_ledger,
            without_ledger=without_ledger,
        )
    )


report_app = typer.Typer(no_args_is_help=True, help="Evidence for auditors (issue 14).")
app.add_typer(report_app, name="report")

_FORMAT = typer.Option("json", "--format", help="json or csv")
_ORG = typer.Option(None, "--org", help="only this organisation (default: all)")


def _report(kind: str, fmt: str, **options: object) -> None:
    from deploy.errors import DeployError
    from deploy.reports.run import run_report

    try:
        text = run_report(kind, fmt, os.environ, **options)  # type: ignore[arg-type]
    except DeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(text, nl=False)


@report_app.command("access-review")
def report_access_review(fmt: str = _FORMAT, org: str | None = _ORG) -> None:
    """Every user: roles, regions, MFA, last login, last reveal. Every run is audited."""
    _report("access-review", fmt, org_id=org)


@report_app.command("incident")
def report_incident(
    start: datetime = typer.Option(..., "--from", help="start of the window (ISO 8601, UTC)"),
    end: datetime = typer.Option(..., "--to", help="end of the window (exclusive)"),
    user: str | None = typer.Option(None, "--user", help="only this user's actions"),
    site: str | None = typer.Option(None, "--site", help="only this site"),
    fmt: str = _FORMAT,
    org: str | None = _ORG,
) -> None:
    """What a window touched (GDPR Art. 33, HIPAA §164.410): secrets revealed to whom, whose
    contact data was read, counts of subjects and records, codes to rotate. Audited."""

    def utc(moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    _report("incident", fmt, org_id=org, start=utc(start), end=utc(end), user_id=user, site_id=site)


@report_app.command("processing")
def report_processing(fmt: str = _FORMAT, org: str | None = _ORG) -> None:
    """Records of processing (GDPR Art. 30): categories, purposes, retention, recipients
    including subcontractors, measures, records held. Every run is audited."""
    _report("processing", fmt, org_id=org)
