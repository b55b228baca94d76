"""Small supergraphs with `@authenticated`, `@requiresScopes` and `@policy`, from the examples
of Apollo's authorization docs, adapted to the Doorward principal (each role is a scope; the
policy `role:<ROLE>` is granted for each role). Each operation is asked as several principals,
with the answer Apollo Router's "filter" mode gives: the fields the caller may not see are
removed and answer null with an UNAUTHORIZED_FIELD_OR_TYPE error at their path (a non-null
one's null goes to its parent), the rest is served.

@apollo/gateway refuses these supergraphs (the authorization features are "for: SECURITY" and
implemented by Apollo Router only): the side by side is Apollo's composition (ours must compose
the same access metadata) and that refusal.
"""

from __future__ import annotations

from typing import Any

from tests.compat.cases import Case, _objs
from tests.compat.datagraph import ref

LINK_ACCESS = (
    'extend schema @link(url: "https://specs.apollo.dev/federation/v2.6", import: '
    '["@key", "@shareable", "@authenticated", "@requiresScopes", "@policy"])\n'
)

# (case, [(operation name, query, roles, expected data, expected error paths)])
ACCESS_CASES: list[tuple[Case, list[tuple[str, str, list[str], Any, list[list[Any]]]]]] = []

ACCESS_CASES.append((
    Case(
        "access_posts",
        {
            "posts": LINK_ACCESS
            + """
type Query { me: User @authenticated posts: [Post] }
type User @key(fields: "id") {
  id: ID! username: String
  email: String @requiresScopes(scopes: [["ADMIN"], ["AUDITOR"]])
}
type Post @key(fields: "id") {
  id: ID! author: User title: String
  views: Int @requiresScopes(scopes: [["DISPATCHER"]])
}
""",
            "stats": LINK_ACCESS
            + """
type Query { audits: [Audit] }
type Post @key(fields: "id") { id: ID! score: Int! @policy(policies: [["role:ADMIN"]]) }
type Audit @key(fields: "id") @requiresScopes(scopes: [["AUDITOR"]]) { id: ID! note: String }
""",
        },
        _objs(
            {"__typename": "User", "id": "u1", "username": "ada", "email": "ada@example.test"},
            {"__typename": "Post", "id": "p1", "author": ref("User", "u1"), "title": "One",
             "views": 10, "score": 7},
            {"__typename": "Post", "id": "p2", "author": ref("User", "u1"), "title": "Two",
             "views": 20, "score": 8},
            {"__typename": "Audit", "id": "a1", "note": "checked"},
        ),
        {"me": ref("User", "u1"), "posts": [ref("Post", "p1"), ref("Post", "p2")],
         "audits": [ref("Audit", "a1")]},
    ),
    [
        ("views_refused", "{ posts { title views } }", ["TECHNICIAN"],
         {"posts": [{"title": "One", "views": None}, {"title": "Two", "views": None}]},
         [["posts", 0, "views"], ["posts", 1, "views"]]),
        ("views_granted", "{ posts { title views } }", ["DISPATCHER"],
         {"posts": [{"title": "One", "views": 10}, {"title": "Two", "views": 20}]}, []),
        ("email_one_of_two_scopes", "{ posts { author { username email } } }", ["AUDITOR"],
         {"posts": [{"author": {"username": "ada", "email": "ada@example.test"}},
                    {"author": {"username": "ada", "email": "ada@example.test"}}]}, []),
        ("email_refused_beside_granted", "{ me { username email } }", ["DISPATCHER"],
         {"me": {"username": "ada", "email": None}}, [["me", "email"]]),
        ("non_null_refused_nulls_parent", "{ posts { id score } }", ["DISPATCHER"],
         {"posts": [None, None]}, [["posts", 0, "score"], ["posts", 1, "score"]]),
        ("policy_granted_by_role", "{ posts { id score } }", ["ADMIN"],
         {"posts": [{"id": "p1", "score": 7}, {"id": "p2", "score": 8}]}, []),
        ("type_requirement_refused", "{ audits { note } posts { title } }", ["TECHNICIAN"],
         {"audits": None, "posts": [{"title": "One"}, {"title": "Two"}]}, [["audits"]]),
        ("type_requirement_granted", "{ audits { note } }", ["AUDITOR", "TECHNICIAN"],
         {"audits": [{"note": "checked"}]}, []),
        ("authenticated_is_every_caller", "{ me { username } }", ["SUBCONTRACTOR"],
         {"me": {"username": "ada"}}, []),
    ],
))

ACCESS_OPS = [
    (case.name, name, query, roles, data, paths)
    for case, ops in ACCESS_CASES
    for name, query, roles, data, paths in ops
]
