"""A small organisation built through the public API only: the gateway and the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp

PASSWORD = "correct horse battery staple 42"
NEW_PASSWORD = "another long passphrase 4711"


class GraphQLClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=30.0)
        # Every response body, so canary tests can search them all.
        self.transcript: list[str] = []

    def raw(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = self.http.post(
            self.url, json={"query": query, "variables": variables or {}}, headers=headers
        )
        self.transcript.append(response.text)
        body: dict[str, Any] = response.json()
        return body

    def data(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        body = self.raw(query, variables, token)
        assert not body.get("errors"), body.get("errors")
        return body["data"]

    def error_codes(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> list[str]:
        body = self.raw(query, variables, token)
        return [e.get("extensions", {}).get("code", "") for e in body.get("errors") or []]


LOGIN = """mutation($email: String!, $password: String!, $otp: String) {
  login(email: $email, password: $password, otp: $otp) {
    accessToken refreshToken passwordChangeRequired mfaEnrollmentRequired user { id }
  }
}"""


@dataclass
class Actor:
    email: str
    password: str
    user_id: str = ""
    token: str = ""
    refresh_token: str = ""
    totp_secret: str | None = None
    recovery_codes: list[str] = field(default_factory=list)

    def otp(self) -> str | None:
        return pyotp.TOTP(self.totp_secret).now() if self.totp_secret else None


@dataclass
class World:
    gql: GraphQLClient
    org_id: str
    admin: Actor
    regions: dict[str, str] = field(default_factory=dict)
    people: dict[str, Actor] = field(default_factory=dict)
    stack: Any = None

    def login(self, actor: Actor, otp: str | None = None) -> Actor:
        payload = self.gql.data(
            LOGIN, {"email": actor.email, "password": actor.password, "otp": otp or actor.otp()}
        )["login"]
        actor.token, actor.refresh_token = payload["accessToken"], payload["refreshToken"]
        actor.user_id = payload["user"]["id"]
        if payload["passwordChangeRequired"]:
            self.gql.data(
                "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }",
                {"c": actor.password, "n": NEW_PASSWORD},
                actor.token,
            )
            actor.password = NEW_PASSWORD
            return self.login(actor)
        if payload["mfaEnrollmentRequired"]:
            enrolment = self.gql.data(
                "mutation { enrollMfa { secret otpauthUri } }", token=actor.token
            )
            actor.totp_secret = enrolment["enrollMfa"]["secret"]
            confirmed = self.gql.data(
                "mutation($o: String!) { confirmMfa(otp: $o) { recoveryCodes } }",
                {"o": actor.otp()},
                actor.token,
            )
            actor.recovery_codes = confirmed["confirmMfa"]["recoveryCodes"]
            # The TOTP code just used cannot be replayed: log in with a recovery code.
            return self.login(actor, otp=actor.recovery_codes.pop())
        return actor

    def create_region(self, name: str) -> str:
        region = self.gql.data(
            "mutation($n: String!) { createRegion(name: $n) { id } }", {"n": name}, self.admin.token
        )
        self.regions[name] = region["createRegion"]["id"]
        return self.regions[name]

    def create_person(self, key: str, role: str, regions: list[str]) -> Actor:
        email = f"{key}-{uuid.uuid4().hex[:6]}@acme-maintenance.com"
        self.gql.data(
            """mutation($i: CreateUserInput!) { createUser(input: $i) { id } }""",
            {
                "i": {
                    "email": email,
                    "displayName": key.title(),
                    "roles": [role],
                    "regionIds": [self.regions[r] for r in regions],
                    "initialPassword": PASSWORD,
                }
            },
            self.admin.token,
        )
        actor = self.login(Actor(email=email, password=PASSWORD))
        self.people[key] = actor
        return actor


def bootstrap_org(env: dict[str, str], org: str, email: str, password: str) -> tuple[str, Actor]:
    """Runs the real `doorward bootstrap` against the stack's data folder or database server;
    returns the organisation id and its first admin (TOTP secret and recovery codes)."""
    run_env = dict(env)
    doorward = str(Path(sys.executable).with_name("doorward"))
    done = subprocess.run(
        [doorward, "bootstrap", "--org", org, "--admin-email", email],
        input=password + "\n",
        env=run_env,
        capture_output=True,
        text=True,
        timeout=180,  # a loaded machine: the CLI imports and hashes the password
        check=False,
    )
    assert done.returncode == 0, done.stderr
    org_id = re.search(r"organisation id:\s*(\S+)", done.stdout)
    secret = re.search(r"TOTP secret:\s*(\S+)", done.stdout)
    codes = re.search(r"recovery codes:\s*(.+)", done.stdout)
    assert org_id, done.stdout
    admin = Actor(
        email=email,
        password=password,
        totp_secret=secret.group(1) if secret else None,
        recovery_codes=codes.group(1).split() if codes else [],
    )
    return org_id.group(1), admin
