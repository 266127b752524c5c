"""Between syncd's canonical field names and HubSpot's properties, both ways."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from syncd.plugin import CrmRecord, normalize_phone

__all__ = [
    "CANONICAL",
    "COMPANY_PROPERTIES",
    "CONTACT_PROPERTIES",
    "company_record",
    "contact_properties",
    "contact_record",
    "marker_in_body",
    "marker_paragraph",
    "to_property",
]

# canonical field -> HubSpot contact property
CANONICAL: Mapping[str, str] = {
    "first_name": "firstname",
    "last_name": "lastname",
    "email": "email",
    "phone": "phone",
    "company": "company",
}

CONTACT_PROPERTIES: tuple[str, ...] = (
    "firstname",
    "lastname",
    "email",
    "phone",
    "mobilephone",
    "company",
    "associatedcompanyid",
    "hubspot_owner_id",  # the record's owner, for syncd's owner rules
)
COMPANY_PROPERTIES: tuple[str, ...] = ("name", "domain", "phone")


def to_property(key: str, contact_fields: Mapping[str, str]) -> str:
    """A plan's field key as a HubSpot property: canonical, a configured label, or literal."""
    return CANONICAL.get(key) or contact_fields.get(key) or key


def contact_properties(
    fields: Mapping[str, str], contact_fields: Mapping[str, str]
) -> dict[str, str]:
    props: dict[str, str] = {}
    for key, value in fields.items():
        props[to_property(key, contact_fields)] = value
    return props


def _props(obj: Mapping[str, Any]) -> dict[str, str]:
    raw = obj.get("properties")
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _phones(props: Mapping[str, str], region: str) -> tuple[str, ...]:
    found: list[str] = []
    for name in ("phone", "mobilephone"):
        key = normalize_phone(props.get(name) or "", region)
        if key is not None and key.e164 not in found:
            found.append(key.e164)
    return tuple(found)


def contact_record(
    obj: Mapping[str, Any], *, region: str, contact_fields: Mapping[str, str]
) -> CrmRecord:
    props = _props(obj)
    fields = {canonical: props.get(prop, "") for canonical, prop in CANONICAL.items()}
    # Extra fields are keyed by property name: the planner writes them back under that name.
    for prop in contact_fields.values():
        fields[prop] = props.get(prop, "")
    return CrmRecord(
        id=str(obj.get("id", "")),
        kind="contact",
        first_name=props.get("firstname", ""),
        last_name=props.get("lastname", ""),
        email=props.get("email", ""),
        phones=_phones(props, region),
        company=props.get("company", ""),
        company_id=props.get("associatedcompanyid") or None,
        fields=fields,
        owner_id=props.get("hubspot_owner_id") or None,
    )


def company_record(obj: Mapping[str, Any], *, region: str) -> CrmRecord:
    props = _props(obj)
    record_id = str(obj.get("id", ""))
    return CrmRecord(
        id=record_id,
        kind="company",
        phones=_phones(props, region),
        company=props.get("name", ""),
        company_id=record_id,
        fields={"company": props.get("name", ""), "phone": props.get("phone", "")},
    )


def marker_paragraph(marker: str) -> str:
    """How an activity body carries its marker: a paragraph of its own."""
    return f"<p>{html.escape(marker)}</p>"


def marker_in_body(marker: str, body: str) -> bool:
    """True when ``body`` carries exactly ``marker`` ("...:M1" is not found in "...:M10")."""
    return marker_paragraph(marker) in body
