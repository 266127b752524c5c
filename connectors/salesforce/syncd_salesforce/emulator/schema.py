"""The org's objects and fields as a new org has them: what describe answers and saves check.

Sources: Salesforce Object Reference (Account, Contact, Lead, Task: each field's type, length,
whether it is required, createable and updateable, the restricted picklists' values in a new
org), and REST API Developer Guide, "sObject Describe" (the field attributes answered).
``Syncd_Key__c`` and ``Syncd_Marker__c`` are the custom fields ``syncd setup`` asks an admin
for; an org made with ``custom_fields=False`` lacks them until created through the Tooling API.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "API_VERSIONS",
    "CUSTOM_FIELDS",
    "ORG_ID",
    "PICKLISTS",
    "PREFIXES",
    "USER_ID",
    "Field",
    "computed_name",
    "default_schema",
    "id_field",
]

# The org's id and its integration user's (prefixes 00D and 005, as Salesforce numbers them).
ORG_ID = "00D000000000001AAA"
USER_ID = "005000000000001AAA"
# API versions 31.0 to 66.0 answer (SOAP login() only up to 64.0: auth.py).
API_VERSIONS = tuple(f"{v}.0" for v in range(31, 67))

# Object Reference, Task and Lead: the values of the restricted picklists in a new org.
PICKLISTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Task", "Status"): (
        "Not Started",
        "In Progress",
        "Completed",
        "Waiting on someone else",
        "Deferred",
    ),
    ("Task", "Priority"): ("High", "Normal", "Low"),
    ("Task", "TaskSubtype"): ("Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"),
    ("Task", "CallType"): ("Internal", "Inbound", "Outbound"),
    ("Lead", "Status"): (
        "Open - Not Contacted",
        "Working - Contacted",
        "Closed - Converted",
        "Closed - Not Converted",
    ),
}

# Custom fields syncd asks an admin for (``syncd setup`` creates them through the Tooling API).
CUSTOM_FIELDS = (("Contact", "Syncd_Key__c"), ("Lead", "Syncd_Key__c"), ("Task", "Syncd_Marker__c"))


@dataclass(frozen=True)
class Field:
    name: str
    type: str = "string"  # id, string, phone, email, reference, date, textarea, picklist
    length: int = 255
    required: bool = False
    createable: bool = True
    updateable: bool = True
    external_id: bool = False
    reference_to: tuple[str, ...] = ()
    sobject: str = ""

    def describe(self) -> dict[str, Any]:
        values = PICKLISTS.get((self.sobject, self.name), ()) if self.type == "picklist" else ()
        return {
            "picklistValues": [
                {"value": v, "label": v, "active": True, "defaultValue": False} for v in values
            ],
            "restrictedPicklist": bool(values),
            "custom": self.name.endswith("__c"),
            "name": self.name,
            "type": self.type,
            "length": self.length,
            "nillable": not self.required and self.type != "id",
            "createable": self.createable,
            "updateable": self.updateable,
            "externalId": self.external_id,
            "idLookup": self.external_id or self.type == "id",
            "referenceTo": list(self.reference_to),
            "relationshipName": self.name[:-2] if self.type == "reference" else None,
        }


def id_field() -> Field:
    return Field("Id", "id", 18, createable=False, updateable=False)


def computed_name() -> Field:
    return Field("Name", "string", 121, createable=False, updateable=False)


PREFIXES = {"Account": "001", "Contact": "003", "Lead": "00Q", "Task": "00T", "User": "005"}


def default_schema() -> dict[str, dict[str, Field]]:
    fields = {
        "Account": [
            id_field(),
            Field("Name", required=True),
            Field("Phone", "phone", 40),
            Field("Website"),
            Field("Description", "textarea", 32_000),
        ],
        "Contact": [
            id_field(),
            Field("FirstName", length=40),
            Field("LastName", length=80, required=True),
            computed_name(),
            Field("Email", "email", 80),
            Field("Phone", "phone", 40),
            Field("MobilePhone", "phone", 40),
            Field("AccountId", "reference", 18, reference_to=("Account",)),
            Field("Title", length=128),
            Field("Description", "textarea", 32_000),
            Field("Syncd_Key__c", external_id=True),
        ],
        "Lead": [
            id_field(),
            Field("FirstName", length=40),
            Field("LastName", length=80, required=True),
            computed_name(),
            Field("Company", required=True),
            Field("Email", "email", 80),
            Field("Phone", "phone", 40),
            Field("MobilePhone", "phone", 40),
            Field("Status", "picklist", 40),
            Field("Description", "textarea", 32_000),
            Field("Syncd_Key__c", external_id=True),
        ],
        "Task": [
            id_field(),
            Field("Subject"),
            Field("Description", "textarea", 32_000),
            Field("Status", "picklist", 40),
            Field("Priority", "picklist", 40),
            Field("WhoId", "reference", 18, reference_to=("Contact", "Lead")),
            Field("WhatId", "reference", 18, reference_to=("Account",)),
            Field("ActivityDate", "date", 10),
            Field("TaskSubtype", "picklist", 40, updateable=False),
            Field("CallType", "picklist", 40),
            Field("Syncd_Marker__c", external_id=True),
        ],
    }
    return {
        sobject: {f.name: replace(f, sobject=sobject) for f in flist}
        for sobject, flist in fields.items()
    }
