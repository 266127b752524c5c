"""HubSpot's default properties, per object, as HubSpot documents them.

Sources: the knowledge-base articles "HubSpot's default contact properties" and "HubSpot's
default company properties", and the CRM API v3 engagement guides (notes, calls, tasks),
which list each engagement's properties. A portal has these before anyone adds a property;
what a connector needs beyond them (``syncd setup``'s custom properties) the emulator only
has once created through the properties API, as in a real portal.

This is the vendor's schema, not the connector's wish list: it holds properties the
connector never reads, and lacks what only ``syncd setup`` creates.
"""

from __future__ import annotations

__all__ = ["CALCULATED", "DEFAULT_PROPERTIES", "DEFAULT_RETURNED", "READ_ONLY", "UNIQUE"]

# The mailing-address properties contacts and companies both have.
_ADDRESS = ("address", "city", "state", "zip", "country")

DEFAULT_PROPERTIES: dict[str, tuple[str, ...]] = {
    "contacts": (
        "salutation",
        "firstname",
        "lastname",
        "email",
        "phone",
        "mobilephone",
        "fax",
        "company",
        "associatedcompanyid",
        "jobtitle",
        "website",
        *_ADDRESS,
        "industry",
        "annualrevenue",
        "numemployees",
        "date_of_birth",
        "message",
        "lifecyclestage",
        "hs_lead_status",
        "hs_persona",
        "hubspot_owner_id",
    ),
    "companies": (
        "name",
        "domain",
        "website",
        "phone",
        *_ADDRESS,
        "industry",
        "type",
        "description",
        "numberofemployees",
        "annualrevenue",
        "timezone",
        "lifecyclestage",
        "hubspot_owner_id",
    ),
    "notes": ("hs_note_body", "hs_timestamp", "hs_attachment_ids", "hubspot_owner_id"),
    "calls": (
        "hs_call_title",
        "hs_call_body",
        "hs_call_direction",
        "hs_call_disposition",
        "hs_call_duration",
        "hs_call_from_number",
        "hs_call_to_number",
        "hs_call_recording_url",
        "hs_call_status",
        "hs_timestamp",
        "hubspot_owner_id",
    ),
    "tasks": (
        "hs_task_subject",
        "hs_task_body",
        "hs_task_priority",
        "hs_task_status",
        "hs_task_type",
        "hs_task_reminders",
        "hs_timestamp",
        "hubspot_owner_id",
    ),
}
# Values HubSpot calculates itself; a write to one is refused ("read-only property").
CALCULATED: dict[str, tuple[str, ...]] = {
    "contacts": (
        "hs_searchable_calculated_phone_number",
        "hs_searchable_calculated_mobile_number",
        "hs_calculated_phone_number",
        "hs_email_domain",
        "num_associated_deals",
    ),
    "companies": ("num_associated_contacts", "num_associated_deals"),
}
# On every object: the record id and its timestamps, written by HubSpot only.
READ_ONLY = ("hs_object_id", "createdate", "lastmodifieddate")
# Default properties that require unique values (contacts are deduplicated by email).
UNIQUE: dict[str, tuple[str, ...]] = {"contacts": ("email",)}
# What a read returns when it names no properties ("By default, ... returns a small set").
DEFAULT_RETURNED = {
    "contacts": ("firstname", "lastname", "email"),
    "companies": ("name", "domain"),
    "notes": ("hs_note_body", "hs_timestamp"),
    "calls": ("hs_call_title", "hs_call_body", "hs_timestamp"),
    "tasks": ("hs_task_subject", "hs_task_status", "hs_timestamp"),
}
