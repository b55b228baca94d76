"""The secrets REST door under the kit's text policy (issue 17) and its published OpenAPI
description: control characters in a path id or a body field are 422 BAD_USER_INPUT (never a
500), and the honest upload still works."""

from __future__ import annotations

import uuid

import pytest
from doorward.secrets.v1 import secrets_pb2

from doorward_kit.auth import Role
from tests.integration.secrets.conftest import SecretsHarness

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def _slot(h: SecretsHarness, org_id: str, user_id: str) -> secrets_pb2.UploadSlot:
    request = secrets_pb2.PrepareUploadRequest(
        site_id=str(uuid.uuid4()), region_id="region-1", kind="GATE_CODE", label="Yard gate"
    )
    return await h.call("PrepareUpload", request, h.token(user_id, org_id, (Role.DISPATCHER,)))


def _bad_input(response) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "BAD_USER_INPUT"
    assert response.headers["cache-control"] == "no-store"
    assert "\\u0000" not in response.text and "\x00" not in response.text


async def test_control_characters_in_ids_and_bodies_are_bad_input(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    dispatcher = str(uuid.uuid4())
    auth = {"Authorization": f"Bearer {h.token(dispatcher, org_id, (Role.DISPATCHER,))}"}
    slot = await _slot(h, org_id, dispatcher)

    _bad_input(
        await h.http.put(
            f"{h.base_url}/v1/uploads/ab%00cd",
            headers=auth,
            json={"uploadToken": slot.upload_token, "value": "1234"},
        )
    )
    _bad_input(
        await h.http.post(
            f"{h.base_url}/v1/reveals/ab%00cd", headers=auth, json={"revealToken": "dwr_x"}
        )
    )
    _bad_input(
        await h.http.post(
            f"{h.base_url}/v1/reveals/{'a' * 300}", headers=auth, json={"revealToken": "dwr_x"}
        )
    )
    _bad_input(
        await h.http.put(
            slot.upload_url,
            headers=auth,
            json={"uploadToken": slot.upload_token + "\x00", "value": "1"},
        )
    )
    _bad_input(
        await h.http.put(
            slot.upload_url,
            headers=auth,
            json={"uploadToken": slot.upload_token, "value": "12\x0034"},
        )
    )

    # The honest upload still works (the slot was not burnt by the refusals above), and a
    # multi-line value is fine.
    done = await h.http.put(
        slot.upload_url,
        headers=auth,
        json={"uploadToken": slot.upload_token, "value": "12 34\nleft"},
    )
    assert done.status_code == 201, done.text


async def test_the_door_publishes_its_openapi_description(secrets_svc: SecretsHarness) -> None:
    response = await secrets_svc.http.get(f"{secrets_svc.base_url}/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    upload = spec["paths"]["/v1/uploads/{slotId}"]["put"]
    reveal = spec["paths"]["/v1/reveals/{grantId}"]["post"]
    assert upload["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "uploadToken",
        "value",
    ]
    assert reveal["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "revealToken"
    ]
    for operation, ok in ((upload, "201"), (reveal, "200")):
        assert set(operation["responses"]) == {
            ok,
            "401",
            "403",
            "404",
            "409",
            "410",
            "413",
            "422",
            "429",
            "503",
        }
