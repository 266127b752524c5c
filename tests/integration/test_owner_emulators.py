"""The emulators' users, spoken to only through the vendors' own REST shapes: HubSpot's
``GET /crm/v3/owners`` and ``hubspot_owner_id`` checks, Salesforce's ``User`` over SOQL and
``OwnerId`` checks (sources cited in syncd_hubspot/emulator/owners.py and
syncd_salesforce/emulator/users.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from syncd_hubspot.emulator.api import HubSpotEmulator
from syncd_salesforce.emulator import SalesforceEmulator
from syncd_salesforce.emulator.schema import USER_ID

from syncd.sandbox.team import TEAM


@pytest.fixture(scope="module")
def hubspot() -> Iterator[HubSpotEmulator]:
    emu = HubSpotEmulator(rate_limit=None, search_rate_limit=None).start()
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def salesforce() -> Iterator[SalesforceEmulator]:
    emu = SalesforceEmulator().start()
    yield emu
    emu.stop()


def _hs(emu: HubSpotEmulator) -> httpx.Client:
    return httpx.Client(
        base_url=emu.base_url, headers={"Authorization": f"Bearer {emu.token}"}, timeout=10
    )


def test_hubspot_lists_active_owners_in_pages_and_archived_ones_apart(
    hubspot: HubSpotEmulator,
) -> None:
    with _hs(hubspot) as http:
        seen: list[dict[str, Any]] = []
        after: str | None = None
        pages = 0
        while True:
            params = {"limit": "2", **({"after": after} if after else {})}
            body = http.get("/crm/v3/owners", params=params).json()
            seen += body["results"]
            pages += 1
            after = body.get("paging", {}).get("next", {}).get("after")
            if not after:
                break
        archived = http.get("/crm/v3/owners", params={"archived": "true"}).json()["results"]
        too_many = http.get("/crm/v3/owners", params={"limit": "501"})
        without_token = httpx.get(f"{hubspot.base_url}/crm/v3/owners")
    active = [m for m in TEAM if m.active]
    assert pages == 3
    assert sorted(o["email"] for o in seen) == sorted(m.email for m in active)
    owner = seen[0]
    assert set(owner) >= {"id", "email", "firstName", "lastName", "userId", "archived", "type"}
    assert owner["archived"] is False
    assert isinstance(owner["userId"], int)
    assert [o["email"] for o in archived] == [m.email for m in TEAM if not m.active]
    assert archived[0]["userId"] is None
    assert archived[0]["userIdIncludingInactive"]
    assert too_many.status_code == 400
    assert without_token.status_code == 401


def test_hubspot_refuses_an_unknown_or_archived_owner_on_a_write(
    hubspot: HubSpotEmulator,
) -> None:
    ids = hubspot.owner_ids()
    contact = hubspot.seed_contact(first_name="Pat", last_name="Owner")

    def task(owner: str) -> httpx.Response:
        with _hs(hubspot) as http:
            return http.post(
                "/crm/v3/objects/tasks/batch/create",
                json={
                    "inputs": [
                        {
                            "properties": {
                                "hs_task_subject": "Call back",
                                "hs_timestamp": "2024-05-06T15:30:00Z",
                                "hubspot_owner_id": owner,
                            },
                            "associations": [
                                {
                                    "to": {"id": contact},
                                    "types": [
                                        {"associationCategory": "HUBSPOT_DEFINED",
                                         "associationTypeId": 204}
                                    ],
                                }
                            ],
                        }
                    ]
                },
            )  # fmt: skip

    unknown = task("123")
    archived = task(ids["carl.former@example.com"])
    fine = task(ids["ana.lopez@example.com"])
    assert unknown.status_code == 400
    assert "INVALID_OWNER_ID" in unknown.json()["message"]
    assert archived.status_code == 400
    assert fine.status_code in (200, 201), fine.text
    owned = [t for t in hubspot.records("tasks") if t.get("hubspot_owner_id")]
    assert [t["hubspot_owner_id"] for t in owned] == [ids["ana.lopez@example.com"]]


def _sf(emu: SalesforceEmulator) -> httpx.Client:
    return httpx.Client(
        base_url=f"{emu.base_url}/services/data/v62.0",
        headers={"Authorization": f"Bearer {emu.issue_session()}"},
        timeout=10,
    )


def test_salesforce_users_over_soql_with_their_active_flag(salesforce: SalesforceEmulator) -> None:
    with _sf(salesforce) as http:
        body = http.get("/query", params={"q": "SELECT Id, Name, Email, IsActive FROM User"})
    assert body.status_code == 200, body.text
    rows = {r["Email"]: r for r in body.json()["records"]}
    assert rows[salesforce.username]["Id"] == USER_ID
    for member in TEAM:
        assert rows[member.email]["Name"] == member.name
        assert rows[member.email]["IsActive"] is member.active
        assert rows[member.email]["Id"].startswith("005")


def test_salesforce_refuses_an_inactive_owner_and_defaults_to_the_creating_user(
    salesforce: SalesforceEmulator,
) -> None:
    ids = salesforce.owner_ids()
    with _sf(salesforce) as http:
        inactive = http.post(
            "/sobjects/Contact",
            json={"LastName": "Gone", "OwnerId": ids["carl.former@example.com"]},
        )
        inactive_task = http.post(
            "/sobjects/Task",
            json={"Subject": "Call", "OwnerId": ids["carl.former@example.com"]},
        )
        unknown = http.post("/sobjects/Task", json={"Subject": "Call", "OwnerId": "005ZZZ"})
        owned = http.post(
            "/sobjects/Task", json={"Subject": "Call", "OwnerId": ids["ana.lopez@example.com"]}
        )
        default = http.post("/sobjects/Contact", json={"LastName": "Kept"})
    assert inactive.status_code == 400
    assert inactive.json()[0]["errorCode"] == "INACTIVE_OWNER_OR_USER"
    assert inactive_task.json()[0]["errorCode"] == "INACTIVE_OWNER_OR_USER"
    assert unknown.json()[0]["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert owned.status_code == 201
    task = salesforce.record(owned.json()["id"])
    assert task is not None
    assert task["OwnerId"] == ids["ana.lopez@example.com"]
    contact = salesforce.record(default.json()["id"])
    assert contact is not None
    assert contact["OwnerId"] == USER_ID
