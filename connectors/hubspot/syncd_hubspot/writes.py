"""Carrying out plans: contacts first (batched), then activities (batched), then tasks.

What makes it safe to repeat after a crash or a timeout:

* new contacts are *upserted* by ``caller_key_property`` (a unique custom contact property,
  which HubSpot allows): the same caller sent twice is still one contact;
* notes/calls/tasks carry the syncd marker in ``marker_property``, which is *not* unique
  (HubSpot has no unique-value properties on activities). A create is never sent twice on
  our own: after an answer that leaves it unknown whether it landed, the chunk's records are
  read back (:mod:`syncd_hubspot.markers`), what landed is kept and the rest is left to
  a later attempt, in doubt (a write still on its way in could land after a read);
* a plan the daemon marks ``in_doubt`` (an earlier attempt may have reached HubSpot) has each
  part found before it is written: the contact by caller key (batch read by ``idProperty``),
  the activity and the emergency task by marker on that contact. Only missing parts are
  written; a plan found whole comes back ``reconciled``.

HubSpot validates a batch as a whole: one bad input (an association to a deleted contact, an
unknown property) can refuse all hundred. :meth:`Writer._isolate` then *diagnoses* (which
records are gone) with a batch read, resends the rest, and only bisects what is still
unexplained, so one bad plan fails alone.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from syncd.plugin import (
    Action,
    ActivitySpec,
    KeyKind,
    Outcome,
    Plan,
    PlanProgress,
    RateLimited,
    RetriableError,
    chunks,
    connector_logger,
)
from syncd_hubspot.lookup import Reader
from syncd_hubspot.markers import MarkerProbe
from syncd_hubspot.options import HubSpotOptions
from syncd_hubspot.owners import activity_owner, record_owner
from syncd_hubspot.records import contact_properties, marker_in_body, marker_paragraph
from syncd_hubspot.transport import ApiResult, InDoubt, Transport

__all__ = ["ASSOCIATION_TYPES", "Writer"]

log = connector_logger("hubspot")

WRITE_BATCH = 100
# HUBSPOT_DEFINED association type ids, (from, to) -> id.
ASSOCIATION_TYPES: Mapping[tuple[str, str], int] = {
    ("notes", "contacts"): 202,
    ("notes", "companies"): 190,
    ("calls", "contacts"): 194,
    ("calls", "companies"): 182,
    ("tasks", "contacts"): 204,
    ("tasks", "companies"): 192,
    ("contacts", "companies"): 1,  # the primary company
}
_OBJECT_TYPES = {"contact": "contacts", "company": "companies"}
_COMPANY_ID = "associatedcompanyid"
_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")
_BODY_PROPERTY = {"notes": "hs_note_body", "calls": "hs_call_body", "tasks": "hs_task_body"}
# Text property values added through the CRM: at most 65,536 characters (HubSpot knowledge
# base, "Property field types in HubSpot"). Longer values are refused, so we cut them.
MAX_TEXT = 65_536

T = TypeVar("T")


@dataclass(init=False)
class _Work(PlanProgress):
    """One plan's progress through the phases; becomes its :class:`Outcome`."""

    task_pending: bool = False
    company_linked: bool = False  # by the contact's own associatedcompanyid
    # In-doubt plans: the parts an earlier attempt already wrote, found before writing.
    contact_found: bool = False
    activity_found: bool = False
    task_wanted: bool = False
    task_found: bool = False

    @property
    def finished(self) -> bool:
        return self.failed or (self.activity_id is not None and not self.task_pending)

    def outcome(self) -> Outcome:
        reconciled = (
            self.plan.in_doubt
            and not self.failed
            and self.activity_found
            and (self.contact_found or self.plan.action is not Action.CREATE)
            and (self.task_found or not self.task_wanted)
        )
        return replace(super().outcome(), reconciled=reconciled)


@dataclass
class _NewContact:
    """All CREATE plans of one caller: one contact."""

    key: str
    members: list[_Work]
    properties: dict[str, str]
    company_id: str | None = None


@dataclass
class _Update:
    object_type: str
    record_id: str
    members: list[_Work]
    properties: dict[str, str]


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _html(text: str) -> str:
    """Caller text as HubSpot rich text: escaped, line breaks kept."""
    return html.escape(text).replace("\r\n", "\n").replace("\n", "<br>")


def _error_text(result: ApiResult) -> str:
    errors = result.errors()
    if errors:
        return "; ".join(str(e.get("message") or e.get("category") or "error") for e in errors[:3])
    return result.message


def _wanted(works: Iterable[_Work]) -> dict[str, set[str]]:
    """record id -> the markers looked for on it."""
    wanted: dict[str, set[str]] = {}
    for work in works:
        wanted.setdefault(str(work.record_id), set()).add(work.marker)
    return wanted


def _fit(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, marked as cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _caller_number(plan: Plan) -> str:
    """The caller's number for ``hs_call_from_number``: E.164 when the matcher read one."""
    for key in plan.keys:
        if key.kind is KeyKind.PHONE:
            return key.value
    return (plan.message.phone or plan.message.caller_id).strip()


def _context_ids(error: Mapping[str, Any]) -> set[str]:
    """Ids HubSpot names in an error's ``context`` (e.g. ``{"ids": ["12"]}``)."""
    found: set[str] = set()
    context = error.get("context")
    if isinstance(context, Mapping):
        for values in context.values():
            if isinstance(values, list):
                found.update(str(v) for v in values)
            elif values is not None:
                found.add(str(values))
    return found


class Writer:
    """Carries out batches of plans; each :meth:`apply` keeps its own progress (thread-safe)."""

    def __init__(self, transport: Transport, reader: Reader, options: HubSpotOptions) -> None:
        self._t, self._reader, self._options = transport, reader, options
        # A new contact names its company in ``associatedcompanyid``, which links the two in
        # the same request; should a portal refuse the property as read-only, links go back
        # to the associations API for the life of this connector.
        self.company_id_writable = True

    def apply(self, plans: Sequence[Plan]) -> list[Outcome]:
        return _Run(self, self._t, self._reader, self._options).apply(plans)


class _Run:
    """One :meth:`Writer.apply` call."""

    def __init__(
        self, writer: Writer, transport: Transport, reader: Reader, options: HubSpotOptions
    ) -> None:
        self._writer = writer
        self._t = transport
        self._reader = reader
        self._options = options
        self._activity_type = "calls" if options.activity == "call" else "notes"
        self._wrote = False
        self._probe = MarkerProbe(transport, reader, options)

    def apply(self, plans: Sequence[Plan]) -> list[Outcome]:
        works = [_Work(p, p.record_id, p.record_kind or "contact") for p in plans]
        try:
            self._reconcile([w for w in works if w.plan.in_doubt])
            creates = [w for w in works if w.plan.action is Action.CREATE]
            self._create_contacts([w for w in creates if not w.contact_found])
            self._associate_companies(creates)
            self._update_records(
                [
                    w
                    for w in works
                    if w.plan.action is Action.UPDATE and w.plan.fields and not w.activity_found
                ]
            )
            self._log_activities(works)
        except RetriableError as exc:
            # Nothing written: the whole call failed and may be retried as a whole. A DAILY
            # limit always reaches the daemon, which pauses the target for hours (what was
            # written so far is found again by the in-doubt reconciliation). Otherwise keep
            # what was done, so the ids of contacts created so far are not lost.
            if not self._wrote or (isinstance(exc, RateLimited) and exc.daily):
                raise
            for work in works:
                if not work.finished:
                    work.fail(f"interrupted: {exc}", retriable=True, retry_after=exc.retry_after)
        return [w.outcome() for w in works]

    # -- in doubt: find each part before writing it --------------------------------------------
    def _reconcile(self, works: list[_Work]) -> None:
        """Find what an earlier attempt at these plans wrote: the contact by caller key, then
        the activity and the emergency task by marker among the record's associations (all
        immediately consistent reads). The phases that follow write only what is missing.

        A new caller's earlier attempt may have logged on the contact holding the caller's
        email instead (an upsert HubSpot refused for that email, see _send_contacts), and a
        contact with the caller key may have appeared since: every such candidate is searched
        for the marker, so an activity written on any of them is found, not written again."""
        if not works:
            return
        key_prop = self._options.caller_key_property
        for work in works:
            work.task_wanted = self._options.emergency_task and work.plan.activity.emergency
        candidates: dict[int, list[str]] = {}  # id(work) -> contact ids, preferred first
        creates = [w for w in works if w.plan.action is Action.CREATE and not w.record_id]
        if creates and key_prop:
            keys = {self._caller_key(w) for w in creates}
            held = self._reader.read_raw(
                "contacts", keys, [key_prop, _COMPANY_ID], id_property=key_prop
            )
            for work in creates:
                obj = held.get(self._caller_key(work))
                if obj is None:
                    continue
                candidates.setdefault(id(work), []).append(str(obj.get("id")))
                company = str((obj.get("properties") or {}).get(_COMPANY_ID) or "")
                work.company_linked = bool(company) and company == work.plan.company_id
        emailed = [w for w in creates if self._email_of(w)]
        if emailed:
            holders = self._reader.read_raw(
                "contacts", {self._email_of(w) for w in emailed}, ["email"], id_property="email"
            )
            for work in emailed:
                obj = holders.get(self._email_of(work))
                if obj is not None and str(obj.get("id")) not in candidates.get(id(work), []):
                    candidates.setdefault(id(work), []).append(str(obj.get("id")))
        for work in works:
            if work.record_id:
                candidates[id(work)] = [str(work.record_id)]
        searched = [w for w in works if candidates.get(id(w)) and not w.plan.activity.existing_id]
        by_type: dict[str, list[_Work]] = {}
        for work in searched:
            kind = _OBJECT_TYPES.get(work.record_kind, "contacts")
            by_type.setdefault(kind, []).append(work)
        for from_type, members in by_type.items():
            wanted: dict[str, set[str]] = {}
            for work in members:
                for record in candidates[id(work)]:
                    wanted.setdefault(record, set()).add(work.marker)
            found = self._probe.find(from_type, self._activity_type, wanted)
            for work in members:
                where = [r for r in candidates[id(work)] if (r, work.marker) in found]
                record = where[0] if where else candidates[id(work)][0]
                if not work.record_id:
                    work.record_id, work.record_kind = record, "contact"
                    work.contact_found = True
                activity_id = found.get((record, work.marker))
                if activity_id:
                    work.activity_id, work.activity_found = activity_id, True
            # A task is written after its activity: without the activity there is none.
            tasks = [w for w in members if w.task_wanted and w.activity_found]
            if tasks:
                found = self._probe.find(from_type, "tasks", _wanted(tasks))
                for work in tasks:
                    work.task_found = (str(work.record_id), work.marker) in found
        for work in works:  # an activity updated in place: its record is the one we know
            if not work.record_id and candidates.get(id(work)):
                work.record_id, work.record_kind = candidates[id(work)][0], "contact"
                work.contact_found = True

    @staticmethod
    def _caller_key(work: _Work) -> str:
        return work.plan.caller_key or work.marker

    def _email_of(self, work: _Work) -> str:
        props = contact_properties(work.plan.fields, self._options.contact_fields)
        return (props.get("email") or "").strip().lower()

    # -- the isolation loop ----------------------------------------------------------------
    def _isolate(
        self,
        items: list[T],
        send: Callable[[list[T]], ApiResult | None],
        fail: Callable[[T, ApiResult], None],
        diagnose: Callable[[list[T]], list[T]] | None = None,
    ) -> None:
        """Send ``items``; when HubSpot refuses the request as a whole, diagnose once, resend
        what is left, and bisect what is still refused until each bad item fails alone."""
        result = send(items)
        if result is None:
            return
        if diagnose is not None:
            remaining = diagnose(items)
            if len(remaining) < len(items):
                items = remaining
                result = send(items) if items else None
                if result is None:
                    return
        if len(items) == 1:
            fail(items[0], result)
            return
        middle = len(items) // 2
        self._isolate(items[:middle], send, fail)
        self._isolate(items[middle:], send, fail)

    # -- contacts --------------------------------------------------------------------------
    def _create_contacts(self, works: list[_Work]) -> None:
        callers: dict[str, _NewContact] = {}
        for work in works:
            key = work.plan.caller_key or work.marker
            entry = callers.setdefault(key, _NewContact(key, [], {}))
            entry.members.append(work)
            entry.company_id = entry.company_id or work.plan.company_id
            for prop, value in contact_properties(
                work.plan.fields, self._options.contact_fields
            ).items():
                if value and not entry.properties.get(prop):
                    entry.properties[prop] = _fit(value)
            for prop, value in record_owner(work.plan).items():
                entry.properties.setdefault(prop, value)
        entries = list(callers.values())
        for entry in entries:
            if "email" in entry.properties:
                entry.properties["email"] = entry.properties["email"].strip().lower()
            if self._options.caller_key_property:
                entry.properties[self._options.caller_key_property] = entry.key
            if entry.company_id and self._writer.company_id_writable:
                entry.properties[_COMPANY_ID] = entry.company_id
        for chunk in chunks(entries, WRITE_BATCH):
            self._isolate(chunk, self._send_contacts, self._contact_refused)

    def _send_contacts(self, chunk: list[_NewContact]) -> ApiResult | None:
        key_prop = self._options.caller_key_property
        if key_prop:
            body = {
                "inputs": [
                    {"idProperty": key_prop, "id": e.key, "properties": e.properties} for e in chunk
                ]
            }
            result = self._t.call(
                "contacts.batch_upsert", self._t.objects_batch.upsert, "contacts", body
            )
        else:
            body = {"inputs": [{"properties": e.properties} for e in chunk]}
            result = self._t.call(
                "contacts.batch_create",
                self._t.objects_batch.create,
                "contacts",
                body,
                idempotent=False,
            )
        if not result.ok:
            if result.status == 400 and _COMPANY_ID in result.message:
                linked = [e for e in chunk if e.properties.pop(_COMPANY_ID, None)]
                if linked:
                    # A company gone since it was listed, or a portal where the property is
                    # read-only: send the contacts unlinked; the associations API links what
                    # still exists and reports the rest gone.
                    if "READ_ONLY_VALUE" in result.message:
                        self._writer.company_id_writable = False
                    return self._send_contacts(chunk)
            return result
        self._wrote = True
        results = result.results()
        self._reader.colleagues.note_written(results)
        matched: dict[int, dict[str, Any]] = {}
        if key_prop:
            index = {e.key: i for i, e in enumerate(chunk)}
            for obj in results:
                value = str((obj.get("properties") or {}).get(key_prop) or "")
                if value in index:
                    matched[index[value]] = obj
        if not matched and len(results) == len(chunk) and not result.errors():
            # HubSpot documents no order for batch results; with nothing to key on, an
            # all-successful batch of equal length is the best we have.
            matched = dict(enumerate(results))
        refused = [e for i, e in enumerate(chunk) if i not in matched]
        holders = self._email_holders(refused) if result.errors() else {}
        for i, entry in enumerate(chunk):
            made = matched.get(i)
            if made is None:
                holder = holders.get(entry.properties.get("email", ""))
                for work in entry.members:
                    if holder:
                        # The caller's email belongs to a contact search could not show yet:
                        # that is the caller; log there rather than fail.
                        work.record_id, work.record_kind = holder, "contact"
                    else:
                        work.fail(f"HubSpot did not create the contact: {_error_text(result)}")
                continue
            is_new = bool(made.get("new", True))
            for work in entry.members:
                work.record_id, work.record_kind = str(made.get("id")), "contact"
                work.created, work.updated = is_new, not is_new
                work.company_linked = (
                    _COMPANY_ID in entry.properties and work.plan.company_id == entry.company_id
                )
        return None

    def _email_holders(self, entries: list[_NewContact]) -> dict[str, str]:
        """email -> the contact holding it, for inputs an upsert refused (a 207 error names
        no holder): email is unique on contacts, so a batch read by it is allowed."""
        emails = {e.properties["email"] for e in entries if e.properties.get("email")}
        if not emails:
            return {}
        held = self._reader.read_raw("contacts", emails, ["email"], id_property="email")
        return {email: str(obj.get("id")) for email, obj in held.items()}

    def _contact_refused(self, entry: _NewContact, result: ApiResult) -> None:
        existing = _EXISTING_ID.search(result.message) if result.status == 409 else None
        for work in entry.members:
            if existing:
                # Someone already has this email: log on that contact instead of failing.
                work.record_id, work.record_kind = existing.group(1), "contact"
            else:
                work.fail(f"HubSpot refused the new contact ({result.status}): {result.message}")

    def _associate_companies(self, works: list[_Work]) -> None:
        pairs: dict[tuple[str, str], list[_Work]] = {}
        for work in works:
            if (
                not work.failed
                and work.record_id
                and work.plan.company_id
                and not work.company_linked
            ):
                pairs.setdefault((work.record_id, work.plan.company_id), []).append(work)
        type_id = ASSOCIATION_TYPES[("contacts", "companies")]
        for chunk in chunks(list(pairs), WRITE_BATCH):
            body = {
                "inputs": [
                    {
                        "from": {"id": contact},
                        "to": {"id": company},
                        "types": [
                            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
                        ],
                    }
                    for contact, company in chunk
                ]
            }
            result = self._t.call(
                "associations.batch_create",
                self._t.associations.create,
                "contacts",
                "companies",
                body,
            )
            if result.ok and not result.errors():
                continue
            # A missing company must not fail the message: report it gone and carry on.
            companies = {company for _, company in chunk}
            alive = self._reader.read_raw("companies", companies, ["name"])
            for contact, company in chunk:
                if company not in alive:
                    for work in pairs[(contact, company)]:
                        work.add_gone([company])

    def _update_records(self, works: list[_Work]) -> None:
        updates: dict[tuple[str, str], _Update] = {}
        for work in works:
            if work.failed:
                continue
            if not work.record_id:
                work.fail("an update plan needs a record id")
                continue
            object_type = _OBJECT_TYPES.get(work.record_kind, "contacts")
            key = (object_type, work.record_id)
            entry = updates.setdefault(key, _Update(object_type, work.record_id, [], {}))
            entry.members.append(work)
            entry.properties.update(self._record_properties(object_type, work.plan.fields))
        by_type: dict[str, list[_Update]] = {}
        for entry in updates.values():
            if not entry.properties:
                continue  # only blanks: nothing to write, the plan goes on to its activity
            by_type.setdefault(entry.object_type, []).append(entry)
        for entries in by_type.values():
            for chunk in chunks(entries, WRITE_BATCH):
                self._isolate(chunk, self._send_updates, self._update_refused)

    def _record_properties(self, object_type: str, fields: Mapping[str, str]) -> dict[str, str]:
        # An empty value never blanks a field in the CRM: it means "nothing to say".
        fields = {k: v for k, v in fields.items() if v and v.strip()}
        fields = {k: _fit(v) for k, v in fields.items()}
        if object_type == "contacts":
            props = contact_properties(fields, self._options.contact_fields)
            if props.get("email"):
                props["email"] = props["email"].strip().lower()
            return props
        return {("name" if k == "company" else k): v for k, v in fields.items()}

    def _send_updates(self, chunk: list[_Update]) -> ApiResult | None:
        object_type = chunk[0].object_type
        body = {"inputs": [{"id": e.record_id, "properties": e.properties} for e in chunk]}
        result = self._t.call(
            f"{object_type}.batch_update", self._t.objects_batch.update, object_type, body
        )
        if not result.ok:
            return result
        self._wrote = True
        if object_type == "contacts":
            self._reader.colleagues.note_written(result.results())
        updated = {str(obj.get("id")) for obj in result.results()}
        missing: set[str] = set()
        for error in result.errors():
            if error.get("category") == "OBJECT_NOT_FOUND":
                missing |= _context_ids(error)
        for entry in chunk:
            for work in entry.members:
                if entry.record_id in updated:
                    work.updated = True
                elif entry.record_id in missing:
                    work.fail(
                        f"{object_type[:-1]} {entry.record_id} no longer exists",
                        retriable=True,
                        gone=[entry.record_id],
                    )
                else:
                    work.fail(f"HubSpot did not update {entry.record_id}: {_error_text(result)}")
        return None

    def _update_refused(self, entry: _Update, result: ApiResult) -> None:
        if result.status == 409 and entry.properties.pop("email", ""):
            # The caller gave an email another contact already has (HubSpot keeps emails
            # unique; its answer to an update names no holder): that contact keeps it; this
            # one gets the rest, and its activity.
            log.warning("hubspot.email_held_by_another_contact", record_id=entry.record_id)
            retried = self._send_updates([entry]) if entry.properties else None
            if retried is None:
                return
            result = retried
        gone = [entry.record_id] if result.status == 404 else []
        for work in entry.members:
            work.fail(
                f"HubSpot refused the update of {entry.record_id}"
                f" ({result.status}): {result.message}",
                retriable=bool(gone),
                gone=gone,
            )

    # -- activities ------------------------------------------------------------------------
    def _log_activities(self, works: list[_Work]) -> None:
        ready: list[_Work] = []
        for work in works:
            if work.failed:
                continue
            if not work.record_id:
                work.fail("no CRM record to log the activity on")
                continue
            ready.append(work)
        found = [w for w in ready if w.activity_found]
        creates = [w for w in ready if not w.plan.activity.existing_id and not w.activity_found]
        updates = [w for w in ready if w.plan.activity.existing_id]
        creates += self._update_activities(updates)
        self._create_engagements(
            self._activity_type, creates, self._activity_properties, self._set_activity
        )
        if self._options.emergency_task:
            tasks = [
                w
                for w in creates + found
                if w.plan.activity.emergency and not w.failed and not w.task_found
            ]
            for work in tasks:
                work.task_pending = True
            self._create_engagements("tasks", tasks, self._task_properties, self._set_task)

    def _activity_properties(self, work: _Work) -> dict[str, str]:
        spec = work.plan.activity
        body = self._body(spec)
        if self._activity_type == "calls":
            # An answered inbound call (calls API guide: direction, status, from number).
            props = {
                "hs_timestamp": _timestamp(spec.occurred_at),
                "hs_call_title": _fit(spec.subject),
                "hs_call_body": body,
                "hs_call_direction": "INBOUND",
                "hs_call_status": "COMPLETED",
            }
            number = _caller_number(work.plan)
            if number:
                props["hs_call_from_number"] = _fit(number)
        else:
            props = {"hs_timestamp": _timestamp(spec.occurred_at), "hs_note_body": body}
        if self._options.task_owner_id:
            props["hubspot_owner_id"] = self._options.task_owner_id
        if self._options.marker_property:
            props[self._options.marker_property] = spec.marker
        props.update({k: _fit(v) for k, v in spec.properties.items()})
        props.update(activity_owner(work.plan))
        return props

    def _task_properties(self, work: _Work) -> dict[str, str]:
        spec = work.plan.activity
        props = {
            "hs_timestamp": _timestamp(spec.occurred_at),
            "hs_task_subject": f"Emergency: {spec.subject}"[:255],
            "hs_task_body": self._body(spec),
            "hs_task_priority": "HIGH",
            "hs_task_status": "NOT_STARTED",
            "hs_task_type": "CALL",
        }
        if self._options.task_owner_id:
            props["hubspot_owner_id"] = self._options.task_owner_id
        props.update(activity_owner(work.plan))  # the resolved owner wins over the fixed one
        if self._options.marker_property:
            props[self._options.marker_property] = spec.marker
        return props

    @staticmethod
    def _body(spec: ActivitySpec) -> str:
        # The marker is in the text too: people can trace a note back, and the search
        # fallback of find_activities (no marker property) has something to find. A body
        # over HubSpot's 65,536 characters is cut in the caller's text, never in the marker.
        head = f"<p><strong>{_html(_fit(spec.subject, 1000))}</strong></p>" if spec.subject else ""
        tail = marker_paragraph(spec.marker)
        text = spec.body
        while True:
            body = f"{head}<p>{_html(text)}</p>{tail}"
            over = len(body) - MAX_TEXT
            if over <= 0 or not text:
                return body
            keep = len(text) - over - 1
            text = text[:keep] + "\u2026" if keep > 0 else ""

    @staticmethod
    def _set_activity(work: _Work, activity_id: str) -> None:
        work.activity_id = activity_id

    @staticmethod
    def _set_task(work: _Work, task_id: str) -> None:
        work.task_pending = False

    def _update_activities(self, works: list[_Work]) -> list[_Work]:
        """Rewrite changed activities in place; return those HubSpot no longer has."""
        if not works:
            return []
        object_type = self._activity_type
        lost: list[_Work] = []
        by_id: dict[str, list[_Work]] = {}
        for work in works:
            by_id.setdefault(str(work.plan.activity.existing_id), []).append(work)

        def send(chunk: list[str]) -> ApiResult | None:
            body = {
                "inputs": [
                    {"id": aid, "properties": self._activity_properties(by_id[aid][-1])}
                    for aid in chunk
                ]
            }
            result = self._t.call(
                f"{object_type}.batch_update", self._t.objects_batch.update, object_type, body
            )
            if not result.ok:
                return result
            self._wrote = True
            done = {str(obj.get("id")) for obj in result.results()}
            for aid in chunk:
                if aid in done:
                    for work in by_id[aid]:
                        work.activity_id = aid
                else:
                    lost.extend(by_id[aid])
            return None

        def refused(aid: str, result: ApiResult) -> None:
            if result.status == 404:
                lost.extend(by_id[aid])
                return
            for work in by_id[aid]:
                work.fail(
                    f"HubSpot refused the {object_type[:-1]} update"
                    f" ({result.status}): {result.message}"
                )

        for chunk in chunks(list(by_id), WRITE_BATCH):
            self._isolate(chunk, send, refused)
        if lost:
            # Deleted in HubSpot since they were logged: they are logged again.
            log.info("hubspot.activities_deleted", object_type=object_type, count=len(lost))
        return lost

    def _create_engagements(
        self,
        object_type: str,
        works: list[_Work],
        properties: Callable[[_Work], dict[str, str]],
        assign: Callable[[_Work, str], None],
    ) -> None:
        """Batch-create notes/calls/tasks, each associated to its record in the same request.

        A create is not idempotent here (no unique activity property): when HubSpot's answer
        leaves it unknown whether the chunk landed, the chunk's records are read back by
        marker; what landed is kept, the rest is left to a later attempt in doubt."""

        def association(work: _Work) -> dict[str, Any]:
            target = _OBJECT_TYPES.get(work.record_kind, "contacts")
            type_id = ASSOCIATION_TYPES[(object_type, target)]
            return {
                "to": {"id": work.record_id},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
            }

        def create(chunk: list[_Work]) -> ApiResult:
            inputs = [
                {"properties": properties(w), "associations": [association(w)]} for w in chunk
            ]
            return self._t.call(
                f"{object_type}.batch_create",
                self._t.objects_batch.create,
                object_type,
                {"inputs": inputs},
                idempotent=False,
            )

        def send(chunk: list[_Work]) -> ApiResult | None:
            try:
                result = create(chunk)
            except InDoubt as exc:
                # Keep what has landed; never resend now: a write still on its way in
                # (a slow server) would land after our read and make two. The daemon
                # retries the rest later, in doubt, and reads again first.
                self._wrote = True
                for work in self._landed(object_type, chunk, assign):
                    work.fail(str(exc), retriable=True)
                return None
            if not result.ok:
                return result
            self._wrote = True
            unmatched = self._match_created(object_type, chunk, result, assign)
            if unmatched:
                for work in diagnose(unmatched):
                    work.fail(
                        f"HubSpot did not create the {object_type[:-1]}: {_error_text(result)}"
                    )
            return None

        def refused(work: _Work, result: ApiResult) -> None:
            work.fail(f"HubSpot refused the {object_type[:-1]} ({result.status}): {result.message}")

        def diagnose(chunk: list[_Work]) -> list[_Work]:
            """Resolve what an immediately consistent read can explain; return the rest."""
            remaining = chunk
            by_kind: dict[str, list[_Work]] = {}
            for work in remaining:
                by_kind.setdefault(_OBJECT_TYPES.get(work.record_kind, "contacts"), []).append(work)
            gone: set[str] = set()
            for kind, members in by_kind.items():
                ids = {str(w.record_id) for w in members}
                alive = self._reader.read_raw(kind, ids, ["hs_object_id"])
                gone |= ids - set(alive)
            for work in remaining:
                if work.record_id in gone:
                    work.fail(
                        f"{work.record_kind} {work.record_id} no longer exists",
                        retriable=True,
                        gone=[str(work.record_id)],
                    )
            return [w for w in remaining if not w.failed]

        for chunk in chunks(works, WRITE_BATCH):
            self._isolate(chunk, send, refused, diagnose)

    def _landed(
        self, object_type: str, chunk: list[_Work], assign: Callable[[_Work, str], None]
    ) -> list[_Work]:
        """After a create in doubt: give the works whose object landed its id; return the rest."""
        left: list[_Work] = []
        by_kind: dict[str, list[_Work]] = {}
        for work in chunk:
            by_kind.setdefault(_OBJECT_TYPES.get(work.record_kind, "contacts"), []).append(work)
        for from_type, members in by_kind.items():
            found = self._probe.find(from_type, object_type, _wanted(members))
            for work in members:
                landed = found.get((str(work.record_id), work.marker))
                if landed:
                    assign(work, landed)
                else:
                    left.append(work)
        if len(left) < len(chunk):
            log.info(
                "hubspot.landed_before_answer_lost",
                object_type=object_type,
                count=len(chunk) - len(left),
            )
        return left

    def _match_created(
        self,
        object_type: str,
        chunk: list[_Work],
        result: ApiResult,
        assign: Callable[[_Work, str], None],
    ) -> list[_Work]:
        """Give each work its created object's id; return the works nothing was created for."""
        results = result.results()
        marker_prop = self._options.marker_property
        body_prop = _BODY_PROPERTY[object_type]
        left = list(chunk)
        for obj in results:
            props = obj.get("properties") or {}
            marker = str(props.get(marker_prop) or "") if marker_prop else ""
            body = str(props.get(body_prop) or "")
            for work in left:
                if (marker and marker == work.marker) or (
                    not marker and marker_in_body(work.marker, body)
                ):
                    assign(work, str(obj.get("id")))
                    left.remove(work)
                    break
        return left
