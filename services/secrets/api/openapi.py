"""The OpenAPI 3.1 description of the secrets REST door (CONTRACT.md, "Secret values: the only
door"), served at GET /openapi.json: the two calls, their bodies and every error they answer.

Written by hand rather than generated from the routes: the routes parse their bodies
themselves (nothing of a malformed body may be echoed), so FastAPI knows nothing about them.
tests/fuzz drives schemathesis from this document, so it must stay true.
"""

from __future__ import annotations

from typing import Any

from doorward_kit.text import ID, LINE

_ERROR_CODES = [
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "BAD_USER_INPUT",
    "CONFLICT",
    "OUTSIDE_ACCESS_WINDOW",
    "RATE_LIMITED",
    "UNAVAILABLE",
    "GONE",
    "PAYLOAD_TOO_LARGE",
]

_ERRORS: dict[str, str] = {
    "401": "No valid access token (UNAUTHENTICATED).",
    "403": "Not this user's upload or grant (FORBIDDEN), or outside the job's access window "
    "(OUTSIDE_ACCESS_WINDOW).",
    "404": "No such upload slot or grant in the caller's organisation (NOT_FOUND).",
    "409": "The secret changed since the upload was prepared, or has no value yet (CONFLICT).",
    "410": "The token was already used, has expired or was revoked (GONE).",
    "413": "The request body is too large (PAYLOAD_TOO_LARGE).",
    "422": "The body is not a JSON object with the required fields, or a field breaks the "
    "input policy (BAD_USER_INPUT).",
    "429": "Too many requests from this user (RATE_LIMITED).",
    "503": "Vault or the audit trail cannot be reached; nothing was changed or revealed "
    "(UNAVAILABLE).",
}


def _string(rule_max: int, description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": rule_max, "description": description}


def _errors() -> dict[str, Any]:
    return {
        status: {
            "description": text,
            "headers": {"Cache-Control": {"$ref": "#/components/headers/NoStore"}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status, text in _ERRORS.items()
    }


def _id_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": _string(ID.max_length, description),
    }


def _body(fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": list(fields),
                    "properties": fields,
                }
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    upload_token = _string(LINE.max_length, "The uploadToken from prepareSecretUpload/Rotation.")
    reveal_token = _string(LINE.max_length, "The revealToken from requestSecretAccess.")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Doorward secrets: the only door for secret values",
            "version": "1",
            "description": "A value enters through PUT {uploadUrl} and leaves through "
            "POST {revealUrl}; every response carries Cache-Control: no-store.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/uploads/{slotId}": {
                "put": {
                    "operationId": "uploadSecretValue",
                    "summary": "Store a secret's value with a single-use upload token.",
                    "parameters": [_id_parameter("slotId", "The upload slot (from uploadUrl).")],
                    "requestBody": _body(
                        {
                            "uploadToken": upload_token,
                            "value": _string(4096, "The secret's value."),
                        }
                    ),
                    "responses": {
                        "201": {
                            "description": "Stored as a new version.",
                            "headers": {"Cache-Control": {"$ref": "#/components/headers/NoStore"}},
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Uploaded"}
                                }
                            },
                        },
                        **_errors(),
                    },
                }
            },
            "/v1/reveals/{grantId}": {
                "post": {
                    "operationId": "revealSecretValue",
                    "summary": "Reveal a secret's value once, with a grant's reveal token.",
                    "parameters": [_id_parameter("grantId", "The grant (from revealUrl).")],
                    "requestBody": _body({"revealToken": reveal_token}),
                    "responses": {
                        "200": {
                            "description": "The value; written to the audit trail first.",
                            "headers": {"Cache-Control": {"$ref": "#/components/headers/NoStore"}},
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Revealed"}
                                }
                            },
                        },
                        **_errors(),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "headers": {
                "NoStore": {"schema": {"type": "string", "const": "no-store"}},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "enum": _ERROR_CODES},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "Uploaded": {
                    "type": "object",
                    "required": ["secretRefId", "version"],
                    "properties": {
                        "secretRefId": {"type": "string"},
                        "version": {"type": "integer", "minimum": 1},
                    },
                },
                "Revealed": {
                    "type": "object",
                    "required": ["secretRefId", "kind", "label", "version", "value"],
                    "properties": {
                        "secretRefId": {"type": "string"},
                        "kind": {
                            "type": "string",
                            "enum": ["DOOR_CODE", "ALARM_CODE", "KEY_SAFE", "GATE_CODE", "OTHER"],
                        },
                        "label": {"type": "string"},
                        "version": {"type": "integer", "minimum": 1},
                        "value": {"type": "string"},
                    },
                },
            },
        },
    }
