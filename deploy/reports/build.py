"""The three reports from plain rows: no database, no I/O, so the counts are easy to test.

Pseudonymous where it can be: customers (data subjects) appear by id only, never by name or
contact detail; staff accounts appear with their login email because an access review exists
to say which person holds which access.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class UserRow:
    org_id: str
    id: str
    email: str
    display_name: str
    roles: tuple[str, ...]
    regions: tuple[str, ...]  # region names
    status: str
    mfa_enabled: bool
    last_login: datetime | None


@dataclass(frozen=True)
class Reveal:
    """A grant whose token was used: the value went to `user_id`."""

    org_id: str
    grant_id: str
    user_id: str
    secret_ref_id: str
    site_id: str
    work_order_id: str
    at: datetime
    break_glass: bool


@dataclass(frozen=True)
class ContactRead:
    """An ALLOWED customer.contact.read audit event."""

    org_id: str
    event_id: str
    user_id: str
    customer_id: str
    at: datetime
    field: str  # "contact" or "address"


@dataclass(frozen=True)
class SecretRefRow:
    org_id: str
    id: str
    site_id: str
    kind: str
    label: str
    deleted: bool


@dataclass
class Report:
    kind: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    filters: dict[str, str] = field(default_factory=dict)

    def orgs(self) -> set[str]:
        return {str(r["org_id"]) for r in self.rows if r.get("org_id")} | set(
            self.summary.get("orgs", [])
        )


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


# --------------------------------------------------------------------------- access review


def access_review(users: list[UserRow], reveals: list[Reveal]) -> Report:
    """Every user: roles, regions, MFA, last login, last reveal (GDPR Art. 32, HIPAA
    §164.308(a)(4) access review, SOC 2 CC6.2/CC6.3)."""
    last_reveal: dict[str, datetime] = {}
    for r in reveals:
        if r.user_id not in last_reveal or r.at > last_reveal[r.user_id]:
            last_reveal[r.user_id] = r.at
    rows = [
        {
            "org_id": u.org_id,
            "user_id": u.id,
            "email": u.email,
            "display_name": u.display_name,
            "status": u.status,
            "roles": ";".join(sorted(u.roles)),
            "regions": ";".join(sorted(u.regions)),
            "mfa_enabled": u.mfa_enabled,
            "last_login": _iso(u.last_login),
            "last_reveal": _iso(last_reveal.get(u.id)),
        }
        for u in sorted(users, key=lambda u: (u.org_id, u.email))
    ]
    active = [u for u in users if u.status == "ACTIVE"]
    summary = {
        "users": len(users),
        "active_users": len(active),
        "active_without_mfa": sum(1 for u in active if not u.mfa_enabled),
        "admins": sum(1 for u in active if "ADMIN" in u.roles),
        "never_logged_in": sum(1 for u in active if u.last_login is None),
        "orgs": sorted({u.org_id for u in users}),
    }
    return Report("access-review", rows, summary)


# --------------------------------------------------------------------------- incident


def incident(
    reveals: list[Reveal],
    reads: list[ContactRead],
    site_customer: dict[str, str],
    refs: dict[str, SecretRefRow],
    emails: dict[str, str],
    *,
    start: datetime,
    end: datetime,
    user_id: str | None = None,
    site_id: str | None = None,
) -> Report:
    """What an incident touched between `start` and `end` (GDPR Art. 33, HIPAA §164.410):
    which secrets were revealed to whom, whose contact data was read, how many subjects and
    records, which codes to rotate. `reveals` and `reads` may be wider than the window."""

    def keep(at: datetime, actor: str) -> bool:
        return start <= at < end and (user_id is None or actor == user_id)

    chosen_reveals = [
        r for r in reveals if keep(r.at, r.user_id) and (site_id is None or r.site_id == site_id)
    ]
    site_of_customer = defaultdict(set)
    for site, customer in site_customer.items():
        site_of_customer[customer].add(site)
    chosen_reads = [
        c
        for c in reads
        if keep(c.at, c.user_id)
        and (site_id is None or site_id in site_of_customer.get(c.customer_id, set()))
    ]
    rows: list[dict[str, Any]] = []
    for r in sorted(chosen_reveals, key=lambda r: r.at):
        rows.append(
            {
                "org_id": r.org_id,
                "kind": "secret_reveal",
                "at": _iso(r.at),
                "user_id": r.user_id,
                "user_email": emails.get(r.user_id, ""),
                "secret_ref_id": r.secret_ref_id,
                "site_id": r.site_id,
                "customer_id": site_customer.get(r.site_id, ""),
                "work_order_id": r.work_order_id,
                "detail": "break_glass" if r.break_glass else "",
            }
        )
    for c in sorted(chosen_reads, key=lambda c: c.at):
        rows.append(
            {
                "org_id": c.org_id,
                "kind": "contact_read",
                "at": _iso(c.at),
                "user_id": c.user_id,
                "user_email": emails.get(c.user_id, ""),
                "secret_ref_id": "",
                "site_id": "",
                "customer_id": c.customer_id,
                "work_order_id": "",
                "detail": c.field,
            }
        )
    rotate: dict[str, SecretRefRow | None] = {}
    for r in chosen_reveals:
        ref = refs.get(r.secret_ref_id)
        if ref is None or not ref.deleted:
            rotate[r.secret_ref_id] = ref
    for ref_id, ref in sorted(rotate.items()):
        rows.append(
            {
                "org_id": ref.org_id if ref else "",
                "kind": "rotate_secret",
                "at": "",
                "user_id": "",
                "user_email": "",
                "secret_ref_id": ref_id,
                "site_id": ref.site_id if ref else "",
                "customer_id": site_customer.get(ref.site_id, "") if ref else "",
                "work_order_id": "",
                "detail": f"{ref.kind}: {ref.label}" if ref else "",
            }
        )
    subjects = {c.customer_id for c in chosen_reads} | {
        site_customer[r.site_id] for r in chosen_reveals if r.site_id in site_customer
    }
    summary = {
        "secrets_revealed": len({r.secret_ref_id for r in chosen_reveals}),
        "reveals": len(chosen_reveals),
        "contact_reads": len(chosen_reads),
        "subjects": len(subjects),
        "records": len(chosen_reveals) + len(chosen_reads),
        "users": len({r.user_id for r in chosen_reveals} | {c.user_id for c in chosen_reads}),
        "codes_to_rotate": len(rotate),
        "orgs": sorted({r.org_id for r in chosen_reveals} | {c.org_id for c in chosen_reads}),
    }
    filters = {"from": start.isoformat(), "to": end.isoformat()}
    if user_id:
        filters["user"] = user_id
    if site_id:
        filters["site"] = site_id
    return Report("incident", rows, summary, filters)


# --------------------------------------------------------------------------- processing

# Records of processing (GDPR Art. 30): what Doorward itself processes. Retention: the
# defaults of issue 14, each organisation may change them (retentionPolicy).
CATEGORIES: tuple[dict[str, str], ...] = (
    {
        "category": "staff_accounts",
        "subjects": "employees and subcontractors of the organisation",
        "data": "login email, display name, roles, regions, password hash (Argon2id), "
        "TOTP secret (sealed), sessions",
        "purpose": "authentication and authorisation of staff",
        "legal_basis": "GDPR Art. 6(1)(b) employment/contract; Art. 6(1)(f) security",
        "retention": "while the account is active; deactivated accounts kept for the audit trail",
        "recipients": "the organisation's ADMINs",
        "measures": "Argon2id, MFA, refresh-token families with reuse detection, session "
        "checks on every request",
    },
    {
        "category": "customer_contact_data",
        "subjects": "the organisation's customers",
        "data": "name, phone, email, site addresses",
        "purpose": "scheduling and carrying out service visits",
        "legal_basis": "GDPR Art. 6(1)(b) contract",
        "retention": "erased (crypto-shredding, kept erased across restores by the shred "
        "ledger) two years after the customer's last job (default); on request (eraseCustomer)",
        "recipients": "DISPATCHERs of the region, the assigned technician during the job's "
        "window; subcontractors get no contact data",
        "measures": "AES-256-GCM envelope encryption, one Vault transit key per customer, "
        "reads audited, restriction of processing (Art. 18)",
    },
    {
        "category": "work_orders",
        "subjects": "customers (visits), staff (assignees)",
        "data": "work orders, notes, invoice lines, assignments",
        "purpose": "service delivery and invoicing",
        "legal_basis": "GDPR Art. 6(1)(b) contract; Art. 6(1)(c) accounting law",
        "retention": "six years after completion (default)",
        "recipients": "DISPATCHERs and ADMINs of the region, the assignee",
        "measures": "organisation and region scoped queries, audited changes",
    },
    {
        "category": "site_secrets",
        "subjects": "customers (access to their premises)",
        "data": "door codes, key-safe codes, alarm codes",
        "purpose": "entering the site for a scheduled job",
        "legal_basis": "GDPR Art. 6(1)(b) contract",
        "retention": "until the site or customer is deleted or erased, or two years after the "
        "site's last job unless held (default); destroyed in Vault, kept destroyed across "
        "restores by the shred ledger",
        "recipients": "the assigned technician, once per grant, inside the job's window",
        "measures": "OpenBao/Vault KV, single-use response-wrapped reveals, no service can "
        "read a value in the clear, every reveal audited",
    },
    {
        "category": "grant_registry",
        "subjects": "staff (who received which code)",
        "data": "grants: user, secret reference, job, times",
        "purpose": "evidence of access to site secrets; revocation",
        "legal_basis": "GDPR Art. 6(1)(f) security; Art. 32",
        "retention": "six years (default, with the audit trail)",
        "recipients": "AUDITORs and ADMINs",
        "measures": "token hashes only; revocation on completion, reassignment, deactivation",
    },
    {
        "category": "audit_events",
        "subjects": "staff (actors), customers (by id only)",
        "data": "who did what to which record, when, from where (ids only)",
        "purpose": "accountability, security monitoring, incident response",
        "legal_basis": "GDPR Art. 6(1)(c)/(f); Art. 5(2) accountability",
        "retention": "six years (default), settable down to six months; pruned prefix kept "
        "as a signed checkpoint",
        "recipients": "AUDITORs and ADMINs",
        "measures": "hash chain, Merkle tree, Ed25519-signed checkpoints, append-only roles",
    },
    {
        "category": "traces",
        "subjects": "staff (pseudonymous user ids)",
        "data": "request spans: timings, decisions, pseudonymous ids",
        "purpose": "operations and security investigation",
        "legal_basis": "GDPR Art. 6(1)(f) legitimate interest (security of processing)",
        "retention": "30 days (default traceDays), enforced per organisation by the embedded "
        "trace store (never longer than its own limit); with an external collector, the "
        "operator's backend's retention",
        "recipients": "AUDITORs and ADMINs, operators",
        "measures": "span attribute allow-list, redaction, canary tests",
    },
)
PROCESSORS = (
    "the operator's hosting of PostgreSQL and OpenBao/Vault (processors under Art. 28)",
    "subcontractor companies whose technicians hold SUBCONTRACTOR accounts",
)


def processing(counts: dict[str, dict[str, int]], subcontractors: dict[str, int]) -> Report:
    """One row per organisation and category, with the number of records held now."""
    rows = []
    for org_id in sorted(counts):
        for cat in CATEGORIES:
            recipients = cat["recipients"]
            if cat["category"] == "work_orders" and subcontractors.get(org_id):
                recipients += f"; {subcontractors[org_id]} subcontractor accounts (no contact data)"
            rows.append(
                {
                    "org_id": org_id,
                    **cat,
                    "recipients": recipients,
                    "records": counts[org_id].get(cat["category"]),
                }
            )
    summary = {
        "controller": "the organisation (each org_id); Doorward's operator acts as processor",
        "processors": list(PROCESSORS),
        "transfers": "none by Doorward itself",
        "orgs": sorted(counts),
    }
    return Report("processing", rows, summary)
