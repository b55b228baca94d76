"""Accounts subgraph: the User entity, an interface, mutations, errors and @inaccessible."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError

USERS = {
    "1": {"name": "Ada", "username": "ada", "note": "n1"},
    "2": {"name": "Alan", "username": "alan", "note": "n2"},
    "3": {"name": "Grace", "username": "grace", "note": "n3"},
}


@strawberry.federation.interface
class Account:
    id: strawberry.ID
    name: str


@strawberry.federation.type(keys=["id"])
class User(Account):
    id: strawberry.ID
    name: str
    username: str = strawberry.federation.field(shareable=True)
    internal_note: str | None = strawberry.federation.field(inaccessible=True, default=None)

    @strawberry.field
    def nickname(self) -> str | None:
        if self.id == "3":
            raise GraphQLError("nickname hidden", extensions={"code": "FORBIDDEN"})
        return self.name.lower()

    @classmethod
    def resolve_reference(cls, id: strawberry.ID) -> User | None:
        return make_user(id)


@strawberry.type
class Bot(Account):
    id: strawberry.ID
    name: str
    owner: User


def make_user(uid: str) -> User | None:
    u = USERS.get(uid)
    if u is None:
        return None
    return User(id=strawberry.ID(uid), name=u["name"], username=u["username"],
                internal_note=u["note"])


@strawberry.type
class Query:
    @strawberry.field
    def me(self) -> User | None:
        return make_user("1")

    @strawberry.field
    def user(self, id: strawberry.ID) -> User | None:
        return make_user(id)

    @strawberry.field
    def users(self) -> list[User]:
        return [u for uid in USERS if (u := make_user(uid)) is not None]

    @strawberry.field
    def accounts(self) -> list[Account]:
        ada = make_user("1")
        assert ada is not None
        return [ada, Bot(id=strawberry.ID("b1"), name="Robo", owner=ada)]

    @strawberry.field
    def boom(self) -> str | None:
        raise GraphQLError("boom failed", extensions={"code": "FORBIDDEN", "detail": "x"})

    @strawberry.field
    def plain_error(self) -> str | None:
        raise ValueError("no code here")

    @strawberry.field
    def broken_user(self) -> User | None:
        # name is non-null: the subgraph itself nulls the user and reports the error.
        return User(id=strawberry.ID("9"), name=None, username="x")  # type: ignore[arg-type]

    @strawberry.federation.field(inaccessible=True)
    def secret_count(self) -> int:
        return 42

    @strawberry.field
    def whoami(self, info: strawberry.Info) -> str | None:
        request = info.context["request"]
        return request.headers.get("authorization")

    @strawberry.field
    def trace_header(self, info: strawberry.Info) -> str | None:
        return info.context["request"].headers.get("traceparent")


@strawberry.type
class Mutation:
    @strawberry.mutation
    def rename(self, id: strawberry.ID, name: str) -> User | None:
        if id in USERS:
            USERS[id]["name"] = name
        return make_user(id)

    @strawberry.mutation
    def login(self, username: str) -> str:
        return f"token-for-{username}"

    @strawberry.mutation
    def refresh(self, token: str) -> str:
        return token + "-refreshed"


schema = strawberry.federation.Schema(query=Query, mutation=Mutation, types=[User, Bot])
