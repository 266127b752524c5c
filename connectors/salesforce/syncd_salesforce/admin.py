"""What a Salesforce org must hold for syncd, checked (``syncd check``) and created
(``syncd setup``): the External ID field on Contact and Lead, the marker field on Task, the
object permissions and the picklist values syncd writes.

Fields are created through the Tooling API (``POST tooling/sobjects/CustomField``), which needs
the "Customize Application" permission; without it each missing field comes back as a
``manual`` step holding the exact clicks for an admin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from simple_salesforce.exceptions import SalesforceError

from syncd.plugin import AuthError, SetupState, SetupStep
from syncd_salesforce.client import SalesforceClient
from syncd_salesforce.options import SalesforceOptions

__all__ = ["PICKLIST_VALUES", "Needs", "field_recipe"]

# Values syncd writes to restricted picklists (writes.py): each must be an active value.
PICKLIST_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("Task", "Status"): ("Completed",),
    ("Task", "Priority"): ("High", "Normal"),
    ("Task", "TaskSubtype"): ("Call",),
    ("Task", "CallType"): ("Inbound",),
}
_LABELS = {"Task": "syncd marker", "Contact": "syncd caller key", "Lead": "syncd caller key"}


def field_recipe(sobject: str, name: str) -> str:
    """The clicks that create the field by hand."""
    return (
        f"Setup > Object Manager > {sobject} > Fields & Relationships > New > Text, length 255,"
        f" Field Name {name.removesuffix('__c')}, tick 'Unique' and 'External ID'; then give the"
        " integration user's permission set Read and Edit access to it"
    )


class Needs:
    """The org's describe answers for the objects syncd uses, read once."""

    def __init__(self, client: SalesforceClient, options: SalesforceOptions) -> None:
        self.client = client
        self.options = options
        self._describe: dict[str, Mapping[str, Any]] = {}

    def fields_wanted(self) -> list[tuple[str, str]]:
        """(sObject, field) pairs syncd needs created: the caller key on the object new callers
        become (Contact or Lead, ``new_record``), the marker on Task."""
        wanted: list[tuple[str, str]] = []
        if self.options.caller_key_field:
            wanted.append((self.options.record_type, self.options.caller_key_field))
        if self.options.marker_field:
            wanted.append(("Task", self.options.marker_field))
        return wanted

    def describe(self, sobject: str) -> Mapping[str, Any]:
        if sobject not in self._describe:
            answer = self.client.restful(f"sobjects/{sobject}/describe")
            self._describe[sobject] = answer if isinstance(answer, Mapping) else {}
        return self._describe[sobject]

    def field(self, sobject: str, name: str) -> Mapping[str, Any] | None:
        fields = self.describe(sobject).get("fields") or []
        return next((f for f in fields if isinstance(f, Mapping) and f.get("name") == name), None)

    # -- check -----------------------------------------------------------------------------
    def problems(self, sobject: str, names: Sequence[str], *, target: str) -> list[str]:
        """What is wrong on ``sobject``, each with its fix; [] when all is well."""
        describe = self.describe(sobject)
        out: list[str] = []
        verbs = ("createable", "updateable") if sobject != "Account" else ("createable",)
        lacking = [v for v in verbs if describe.get(v) is False]
        if lacking:
            out.append(
                f"the integration user cannot {' or '.join(v[:-4] for v in lacking)} {sobject}:"
                f" give its permission set Read, Create and Edit on {sobject}"
            )
        for name in names:
            spec = self.field(sobject, name)
            if spec is None:
                fix = f"run 'syncd setup --target {target}'" if name.endswith("__c") else ""
                out.append(
                    f"{sobject}.{name} is missing or hidden: "
                    + (f"{fix}, or {field_recipe(sobject, name)}" if fix else "grant field access")
                )
                continue
            if spec.get("createable") is False or spec.get("updateable") is False:
                out.append(
                    f"{sobject}.{name} is read-only for the integration user: give its"
                    " permission set Edit access to the field"
                )
            special = name in (self.options.caller_key_field, self.options.marker_field)
            if special and name.endswith("__c") and not spec.get("externalId"):
                out.append(
                    f"{sobject}.{name} is not an External ID field (not indexed): edit the field"
                    " and tick 'External ID' and 'Unique'"
                )
        for (obj, picklist), values in PICKLIST_VALUES.items():
            if obj != sobject:
                continue
            spec = self.field(sobject, picklist)
            if spec is None:
                out.append(f"{sobject}.{picklist} is missing or hidden: grant field access")
                continue
            active = {
                str(v.get("value"))
                for v in spec.get("picklistValues") or []
                if isinstance(v, Mapping) and v.get("active", True)
            }
            for value in values:
                if active and value not in active:
                    out.append(
                        f"{sobject}.{picklist} lacks the value {value!r}: add it in Setup >"
                        f" Object Manager > {sobject} > Fields & Relationships > {picklist}"
                    )
        return out

    # -- setup -----------------------------------------------------------------------------
    def setup(self, *, dry_run: bool) -> list[SetupStep]:
        steps: list[SetupStep] = []
        for sobject, name in self.fields_wanted():
            what = f"{sobject}.{name}"
            spec = self.field(sobject, name)
            if spec is not None:
                if spec.get("externalId"):
                    steps.append(SetupStep(what, SetupState.PRESENT, "External ID"))
                else:
                    steps.append(
                        SetupStep(
                            what,
                            SetupState.MANUAL,
                            "exists but is not an External ID: edit the field and tick"
                            " 'External ID' and 'Unique'",
                        )
                    )
                continue
            if dry_run:
                steps.append(
                    SetupStep(what, SetupState.WOULD_CREATE, "Text(255), External ID, Unique")
                )
                continue
            steps.append(self._create(sobject, name))
        return steps

    def _create(self, sobject: str, name: str) -> SetupStep:
        what = f"{sobject}.{name}"
        body = {
            "FullName": what,
            "Metadata": {
                "label": _LABELS.get(sobject, name),
                "type": "Text",
                "length": 255,
                "externalId": True,
                "unique": True,
                "caseSensitive": True,  # markers and keys are case-sensitive
                "description": "Written by syncd; do not edit.",
            },
        }
        try:
            self.client.call(
                "tooling CustomField",
                lambda sf: sf.restful("tooling/sobjects/CustomField", method="POST", json=body),
                idempotent=False,
            )
        except AuthError as exc:  # 403: no "Customize Application" permission
            return SetupStep(
                what, SetupState.MANUAL, f"{exc}. By hand: {field_recipe(sobject, name)}"
            )
        except SalesforceError as exc:
            return SetupStep(
                what,
                SetupState.MANUAL,
                f"the org refused ({exc.status}). By hand: " + field_recipe(sobject, name),
            )
        self._describe.pop(sobject, None)
        return SetupStep(what, SetupState.CREATED, "Text(255), External ID, Unique")
