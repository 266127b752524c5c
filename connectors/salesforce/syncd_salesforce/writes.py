"""Carrying out plans: contacts (upsert/insert/update) in sObject Collections, then Tasks.

New callers are created *once per caller_key* with an external-id upsert
(``PATCH composite/sobjects/<Type>/<Syncd_Key__c>``), so a batch re-sent after a crash updates
the record it created instead of creating another. Without that field, creates are plain
inserts, preceded by an immediately consistent SOQL look-up of the caller's phones and emails.

A plan *in doubt* (an earlier attempt may have reached the org) is looked for part by part
before anything is written (:meth:`Writer._reconcile`): its Task by marker (SOQL equality on
``marker_field``), its new record by caller key (SOQL equality on the External ID field), the
fields of an update by reading the record. Only what is missing is written; a plan found whole
comes back ``reconciled``.

Duplicate rules (``DUPLICATES_DETECTED``) are a match, never a failure: on a create or an
upsert the record the rule named is used; on an update the record we matched keeps the
activity and the fields the rule objected to are left unwritten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from syncd.plugin import (
    Action,
    ActivitySpec,
    CrmRecord,
    KeyKind,
    Outcome,
    Plan,
    PlanProgress,
    RateLimited,
    RetriableError,
    TryAgain,
    chunks,
    connector_logger,
    normalize_phone,
)
from syncd_salesforce.accounts import Accounts, Pending
from syncd_salesforce.client import COMPOSITE_QUERIES, SalesforceClient
from syncd_salesforce.errors import GONE_CODES, SfError, parse_errors, summary
from syncd_salesforce.lookup import Lookup, stored_marker, written_phone
from syncd_salesforce.options import SalesforceOptions
from syncd_salesforce.owners import record_owner, task_owner
from syncd_salesforce.soql import pack, soql_in

__all__ = ["BATCH", "Writer", "external_id", "task_subject"]

log = connector_logger("salesforce")

BATCH = 200  # sObject Collections cap
_CANONICAL = {
    "first_name": "FirstName",
    "last_name": "LastName",
    "email": "Email",
    "phone": "Phone",
}
# Lengths of the standard fields we write: a longer value is cut, not rejected.
_MAX_LENGTH = {
    "FirstName": 40,
    "LastName": 80,
    "Email": 80,
    "Phone": 40,
    "MobilePhone": 40,
    "Company": 255,
    "Subject": 255,
    "Description": 32_000,
}
_TRANSIENT = frozenset({"UNABLE_TO_LOCK_ROW", "REQUEST_RUNNING_TOO_LONG", "SERVER_UNAVAILABLE"})
_TASK_GONE = GONE_CODES | {"NOT_FOUND", "MALFORMED_ID"}
_UNKNOWN = "Unknown"


def _cut(name: str, value: str) -> str:
    limit = _MAX_LENGTH.get(name)
    return value[:limit] if limit else value


def _describe(errors: Sequence[SfError]) -> str:
    return "; ".join(map(str, errors)) or "rejected"


_ACCOUNTS = "accounts0"  # the reference of the Account create in a composite request


def _kind_of(record_id: str | None, default: str) -> str:
    """A record's kind from its id's key prefix (003 Contact, 00Q Lead)."""
    if record_id and record_id.startswith("00Q"):
        return "lead"
    if record_id and record_id.startswith("003"):
        return "contact"
    return default


def external_id(caller_key: str) -> str:
    """The upsert key for a caller: stable, short and free of personal data."""
    return hashlib.sha256(caller_key.encode("utf-8")).hexdigest()[:40]


def task_subject(activity: ActivitySpec, *, marker_in_subject: bool) -> str:
    """The Task subject, at most 255 characters; ends with `` [<marker>]`` (never cut) when
    the marker has no field of its own."""
    subject = " ".join(activity.subject.split()) or "Call"
    if not marker_in_subject:
        return subject[: _MAX_LENGTH["Subject"]]
    suffix = f" [{stored_marker(activity.marker)}]"
    return subject[: max(0, _MAX_LENGTH["Subject"] - len(suffix))] + suffix


_State = PlanProgress


@dataclass
class _Group:
    """Plans written by one record of a request: a new caller's plans, or one update."""

    key: str
    states: list[_State] = field(default_factory=list)

    def fail(self, error: str, *, retriable: bool = False, gone: tuple[str, ...] = ()) -> None:
        for state in self.states:
            state.fail(error, retriable=retriable, gone=gone)


@dataclass
class _Op:
    """One sObject Collections request, as sent alone or inside a composite request."""

    ref: str
    method: str
    path: str
    records: list[dict[str, Any]]
    groups: Sequence[_Group]
    done: Callable[[Sequence[_Group], list[dict[str, Any]]], None]
    task: bool = False
    accounts: Pending | None = None  # the new Accounts this op creates or references


class Writer:
    def __init__(
        self, client: SalesforceClient, options: SalesforceOptions, lookup: Lookup
    ) -> None:
        self.client = client
        self.options = options
        self.lookup = lookup
        self.accounts = Accounts(options, lookup)

    def apply(self, plans: Sequence[Plan]) -> list[Outcome]:
        states = [_State(p, record_id=p.record_id, record_kind=p.record_kind) for p in plans]
        found_whole = self._reconcile([s for s in states if s.plan.in_doubt])
        pending = self.accounts.plan(states)
        new_callers = {
            s.plan.caller_key or f"delivery:{s.plan.delivery_id}"
            for s in states
            if s.plan.action is Action.CREATE
        }
        foldable = self.options.caller_key_field and len(new_callers) <= BATCH
        if pending.names and (pending.for_updates or not foldable):
            # For existing Contacts, or too many to fold into the first composite request:
            # create them first, alone.
            pending.link(pending.resolve(self._create_accounts(pending.records()) or []))
            pending = Pending()
        groups: dict[str, _Group] = {}
        updates: list[_State] = []
        for state in states:
            plan = state.plan
            if plan.action is Action.CREATE:
                key = plan.caller_key or f"delivery:{plan.delivery_id}"
                groups.setdefault(key, _Group(key)).states.append(state)
            elif not plan.record_id:
                state.fail(f"{plan.action.value} plan without a record id")
            elif plan.action is Action.UPDATE and self.fields(plan, create=False):
                updates.append(state)
        by_record: dict[str, _Group] = {}
        for state in updates:  # one entry per record: Collections refuses a repeated id
            record_id = str(state.plan.record_id)
            by_record.setdefault(record_id, _Group(record_id)).states.append(state)
        if self.options.caller_key_field:
            self._in_composites(list(groups.values()), list(by_record.values()), states, pending)
        else:
            self._insert(list(groups.values()))
            self._update(list(by_record.values()))
        # Whatever a composite request could not take (or a failed reference held back).
        self._log_tasks([s for s in states if not s.failed and s.record_id and not s.activity_id])
        return [
            replace(s.outcome(), reconciled=True)
            if id(s) in found_whole and not s.failed
            else s.outcome()
            for s in states
        ]

    # -- in doubt: find each part before writing it -----------------------------------------
    def _reconcile(self, states: Sequence[_State]) -> set[int]:
        """Look for what an earlier attempt at these plans may have written (immediately
        consistent reads only) and turn each plan into what is still missing. Returns the
        ``id()`` of the states found whole (nothing left to write)."""
        if not states:
            return set()
        whole: set[int] = set()
        fresh = [s for s in states if not s.plan.activity.existing_id]
        found = self.lookup.find_activities([s.marker for s in fresh])
        rest: list[_State] = []
        for state in states:
            ref = found.get(state.marker) if not state.plan.activity.existing_id else None
            if ref is None:
                rest.append(state)
                continue
            # The Task references its record, written first: the plan landed whole.
            record_id = ref.record_id or state.record_id
            kind = _kind_of(record_id, state.record_kind)
            state.plan = replace(
                state.plan, action=Action.LOG, record_id=record_id, record_kind=kind, fields={}
            )
            state.record_id, state.record_kind, state.activity_id = record_id, kind, ref.activity_id
            whole.add(id(state))
        self._find_created([s for s in rest if s.plan.action is Action.CREATE])
        self._drop_written([s for s in rest if s.plan.action is Action.UPDATE])
        return whole

    def _find_created(self, states: Sequence[_State]) -> None:
        """New callers an earlier attempt did create: found by their External ID."""
        key_field = self.options.caller_key_field
        if not states or not key_field:
            return  # without the field, inserts look the caller up by phone and email first
        by_key = {
            external_id(s.plan.caller_key or f"delivery:{s.plan.delivery_id}"): s for s in states
        }
        sobject = self.options.record_type
        select = f"SELECT Id, {key_field} FROM {sobject} WHERE "
        rows = [
            row
            for _, soql in pack(list(by_key), lambda chunk: select + soql_in(key_field, chunk))
            for row in self.client.query_all(soql)
        ]
        ids = {str(r.get(key_field)): str(r.get("Id")) for r in rows}
        for state in states:
            key = external_id(state.plan.caller_key or f"delivery:{state.plan.delivery_id}")
            if key in ids:
                kind = sobject.lower()
                state.plan = replace(
                    state.plan, action=Action.LOG, record_id=ids[key], record_kind=kind, fields={}
                )
                state.record_id, state.record_kind = ids[key], kind

    def _drop_written(self, states: Sequence[_State]) -> None:
        """Updates an earlier attempt may have made: fields already holding the value go."""
        by_kind: dict[str, list[_State]] = {}
        for state in states:
            by_kind.setdefault(state.plan.record_kind, []).append(state)
        for kind, group in by_kind.items():
            records = self.lookup.read(kind, [str(s.plan.record_id) for s in group])
            for state in group:
                record = records.get(str(state.plan.record_id))
                if record is None:
                    continue  # gone: the update reports it as such
                left = {k: v for k, v in state.plan.fields.items() if not self._holds(record, k, v)}
                action = Action.UPDATE if left else Action.LOG
                state.plan = replace(state.plan, action=action, fields=left)

    def _holds(self, record: CrmRecord, name: str, value: str) -> bool:
        if name == "phone":
            key = normalize_phone(value, self.lookup.region)
            return key is not None and key.e164 in record.phones
        api_name = self.options.contact_fields.get(name, name)
        have = record.fields.get(name) or record.fields.get(api_name) or ""
        return bool(have) and have == _cut(_CANONICAL.get(name, api_name), value)

    def _resend(self, op: _Op) -> None:
        """An idempotent contact write again, alone, its Account references resolved."""
        records = op.records
        if op.accounts is not None:
            records = [op.accounts.resolved(r, _ACCOUNTS) for r in records]
        results = self._send(op.groups, op.method, op.path, records, idempotent=True)
        if results is not None:
            op.done(op.groups, results)

    def _accounts_missing(self, pending: Pending) -> None:
        """After a composite request whose Account create failed or went unanswered: the
        Accounts that did land are found by name, the rest created alone."""
        pending.link(self.accounts.find(dict(pending.names)))
        left = Pending({k: n for k, n in pending.names.items() if k not in pending.ids})
        if left.names:
            pending.link(left.resolve(self._create_accounts(left.records()) or []))

    def _create_accounts(self, records: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """New Accounts in one Collections create. An ambiguous failure propagates: the retry
        comes in doubt and finds by name what did land."""
        try:
            return self.client.collections("POST", "composite/sobjects", records, idempotent=False)
        except (SalesforceMalformedRequest, SalesforceResourceNotFound) as exc:
            log.error(
                "salesforce.request_rejected", what="Account create", error=summary(exc.content)
            )
            return None

    # -- one composite request for contacts and their tasks -------------------------------
    def _in_composites(
        self, groups: list[_Group], updates: list[_Group], states: list[_State], pending: Pending
    ) -> None:
        """Upserts, updates and the Tasks on them, up to five Collections per composite request
        (one API call). A Task's WhoId references the contact write's result
        (``@{upsert0[3].id}``): if that write failed, the reference fails the Task batch, and
        those Tasks are sent afterwards, once the outcome of their contact is known."""
        units: list[list[_Op]] = []
        for n, chunk in enumerate(chunks(groups, BATCH)):
            ref = f"upsert{n}"
            path = f"composite/sobjects/{self.options.record_type}/{self.options.caller_key_field}"
            records = self._upsert_records(chunk)
            first: list[_Op] = []
            if n == 0 and pending.names:
                # New Accounts first, in the same request: the Contacts reference their ids.
                for group, record in zip(chunk, records, strict=True):
                    key = pending.key_of(group.states[0])
                    if key is not None:
                        record["AccountId"] = pending.reference(key, _ACCOUNTS)
                first.append(
                    _Op(
                        _ACCOUNTS,
                        "POST",
                        "composite/sobjects",
                        pending.records(),
                        [],
                        lambda _groups, results: pending.link(pending.resolve(results)),
                        accounts=pending,
                    )
                )
            op = _Op(ref, "PATCH", path, records, chunk, self._contact_results, accounts=pending)
            units.append([*first, op, *self._task_ops(ref, chunk)])
        for n, chunk in enumerate(chunks(updates, BATCH)):
            ref = f"update{n}"
            records = self._update_records(chunk)
            op = _Op(ref, "PATCH", "composite/sobjects", records, chunk, self._update_results)
            units.append([op, *self._task_ops(ref, chunk)])
        busy = {id(s) for g in [*groups, *updates] for s in g.states}
        logs = [
            _Group(str(s.record_id), [s])
            for s in states
            if id(s) not in busy and s.record_id and not s.failed
        ]
        units += [[op] for op in self._task_ops("", logs)]
        batch: list[_Op] = []
        for unit in units:
            unit = unit[:COMPOSITE_QUERIES]  # Tasks past the cap go afterwards, on known ids
            if len(batch) + len(unit) > COMPOSITE_QUERIES:
                self._composite(batch)
                batch = []
            batch += unit
        if batch:
            self._composite(batch)

    def _task_ops(self, ref: str, groups: Sequence[_Group]) -> list[_Op]:
        """Task creates for these groups' plans; WhoId references ``ref``'s results if given."""
        pending = [
            (state, f"@{{{ref}[{n}].id}}" if ref else state.record_id)
            for n, group in enumerate(groups)
            for state in group.states
            if not state.plan.activity.existing_id and not state.failed and not state.activity_id
        ]
        ops: list[_Op] = []
        for chunk in chunks(pending, BATCH):
            records = [
                {"attributes": {"type": "Task"}, **self.task_fields(s, create=True), "WhoId": who}
                for s, who in chunk
            ]
            task_groups = [_Group(s.plan.activity.marker, [s]) for s, _ in chunk]
            name = f"{ref or 'log'}tasks{len(ops)}"
            ops.append(
                _Op(
                    name,
                    "POST",
                    "composite/sobjects",
                    records,
                    task_groups,
                    self._task_results,
                    task=True,
                )
            )
        return ops

    def _composite(self, ops: list[_Op]) -> None:
        subrequests = [
            {
                "method": op.method,
                "url": self.client.data_path(op.path),
                "referenceId": op.ref,
                "body": {"allOrNone": False, "records": op.records},
            }
            for op in ops
        ]
        try:
            answers = self.client.composite(subrequests, idempotent=False)
        except (SalesforceMalformedRequest, SalesforceResourceNotFound) as exc:
            error = f"composite request rejected: {summary(exc.content)}"
            log.error("salesforce.request_rejected", error=error)
            for op in ops:
                for group in op.groups:
                    group.fail(error)
            return
        except RateLimited:
            raise
        except RetriableError as exc:
            if self.client.session.last_response is None:
                # No answer at all (a read timeout, a dropped connection): the org may still
                # be carrying the request out, so a look-up now can miss Tasks about to land
                # and sending them later would log them twice. Leave it to the daemon, which
                # retries after its back-off and reconciles by marker first.
                raise
            # Ambiguous: some of it may have been done. Contact writes are idempotent and are
            # repeated alone; Tasks that did land are found by marker, the rest sent later.
            log.info("salesforce.composite_reconcile", problem=str(exc))
            for op in ops:
                if op.task:
                    self._tasks_missing(op.groups)
                elif op.ref == _ACCOUNTS and op.accounts is not None:
                    self._accounts_missing(op.accounts)
                else:
                    self._resend(op)
            return
        for op in ops:
            answer = answers.get(op.ref) or {}
            status, body = int(answer.get("httpStatusCode") or 0), answer.get("body")
            if 200 <= status < 300 and isinstance(body, list):
                op.done(op.groups, body)
                continue
            errors = parse_errors(body)
            if op.task and any(e.code == "PROCESSING_HALTED" for e in errors):
                continue  # a referenced contact write failed: these Tasks go afterwards
            if op.ref == _ACCOUNTS and op.accounts is not None:
                self._accounts_missing(op.accounts)  # whatever went wrong: find, then create
                continue
            if op.accounts is not None and any(e.code == "PROCESSING_HALTED" for e in errors):
                self._resend(op)  # an Account it referenced failed: send it on known ids
                continue
            for group in op.groups:
                group.fail(f"{op.method} {op.path}: {_describe(errors)}", retriable=status >= 500)

    # -- field mapping -------------------------------------------------------------------
    @staticmethod
    def sobject(kind: str) -> str:
        return "Lead" if kind.lower() == "lead" else "Contact"

    def fields(self, plan: Plan, *, create: bool) -> dict[str, Any]:
        """``plan.fields`` in Salesforce names: canonical keys, ``contact_fields`` labels, or
        literal API names. Empty values are skipped: a blank never overwrites data."""
        sobject = self.options.record_type if create else self.sobject(plan.record_kind)
        out: dict[str, Any] = {}
        for key, value in plan.fields.items():
            if not value:
                continue
            if key == "company":
                if sobject == "Lead":
                    out["Company"] = _cut("Company", value)
                continue  # a Contact's company is its AccountId link (plan.company_id)
            name = _CANONICAL.get(key) or self.options.contact_fields.get(key) or key
            out[name] = self._phone(value) if name == "Phone" else _cut(name, value)
        if create:
            message = plan.message
            for name, value in (
                ("FirstName", message.first_name),
                ("LastName", message.last_name),
                ("Email", message.email),
            ):
                if value.strip() and name not in out:
                    out[name] = _cut(name, value.strip())
            caller = normalize_phone(message.phone, self.lookup.region)
            if caller is not None and "Phone" not in out:  # "Restricted" is no phone number
                out["Phone"] = self._phone(message.phone)
            out.setdefault("LastName", _UNKNOWN)  # required on Contact and Lead
            if sobject == "Lead":
                out.setdefault("Company", _cut("Company", message.company.strip() or _UNKNOWN))
        if sobject == "Contact" and plan.company_id:
            out["AccountId"] = plan.company_id
        if create:
            out.update(record_owner(plan))
        return out

    def _phone(self, text: str) -> str:
        """Phones are written in one spelling, so SOQL can find them before SOSL can."""
        key = normalize_phone(text, self.lookup.region)
        if key is None:
            return _cut("Phone", text.strip())
        spelled = written_phone(key.e164)
        return _cut("Phone", f"{spelled} x{key.extension}" if key.extension else spelled)

    def _group_fields(self, group: _Group) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for state in group.states:  # the earliest message's value wins; "Unknown" never does
            for name, value in self.fields(state.plan, create=True).items():
                if name not in merged or (merged[name] == _UNKNOWN and value != _UNKNOWN):
                    merged[name] = value
        return merged

    # -- contacts ------------------------------------------------------------------------
    def _resolved(self, group: _Group, record_id: str, *, created: bool) -> None:
        # A duplicate rule may name a record of the other kind (a Lead's rule, a Contact).
        kind = _kind_of(record_id, self.options.record_type.lower())
        for index, state in enumerate(group.states):
            state.record_id, state.record_kind = record_id, kind
            state.created = created and index == 0  # one contact, counted once

    def _upsert_records(self, chunk: Sequence[_Group]) -> list[dict[str, Any]]:
        key_field = self.options.caller_key_field
        return [
            {
                "attributes": {"type": self.options.record_type},
                **self._group_fields(group),
                key_field: external_id(group.key),
            }
            for group in chunk
        ]

    def _insert(self, groups: list[_Group]) -> None:
        if not groups:
            return
        for chunk in chunks(self._link_existing(groups), BATCH):
            records = [
                {"attributes": {"type": self.options.record_type}, **self._group_fields(g)}
                for g in chunk
            ]
            sent = self._send_create(chunk, records, reconcile=self._link_existing)
            if sent is not None:
                self._contact_results(*sent)

    def _link_existing(self, groups: Sequence[_Group]) -> list[_Group]:
        """Link groups whose caller is already in the org (SOQL: immediately consistent) and
        return the rest. This is what makes a repeated insert safe without an external id."""
        keys = {
            group.key: [
                k
                for s in group.states
                for k in s.plan.keys
                if k.kind in (KeyKind.EMAIL, KeyKind.PHONE)
            ]
            for group in groups
        }
        wanted = [k for ks in keys.values() for k in ks]
        if not wanted:
            return list(groups)
        found = self.lookup.soql_candidates(self.options.record_type, wanted)
        left = []
        for group in groups:
            match = next((found[k][0] for k in keys[group.key] if found.get(k)), None)
            if match is None:
                left.append(group)
            else:
                self._resolved(group, match.id, created=False)
        return left

    def _contact_results(self, groups: Sequence[_Group], results: list[dict[str, Any]]) -> None:
        duplicates: list[tuple[_Group, SfError]] = []
        for group, result in zip(groups, results, strict=False):
            if result.get("success"):
                self._resolved(group, str(result["id"]), created=bool(result.get("created", True)))
                continue
            errors = parse_errors(result.get("errors"))
            duplicate = next((e for e in errors if e.code == "DUPLICATES_DETECTED"), None)
            if duplicate is not None:
                duplicates.append((group, duplicate))
            else:
                group.fail(_describe(errors), retriable=any(e.code in _TRANSIENT for e in errors))
        for group in groups[len(results) :]:
            group.fail("no result for this record", retriable=True)
        if duplicates:
            self._link_duplicates(duplicates)

    def _link_duplicates(self, duplicates: list[tuple[_Group, SfError]]) -> None:
        """The org's duplicate rule recognised the caller: a match, not a failure. Use the
        record it named, else find the caller ourselves by phone and email."""
        unnamed = []
        for group, error in duplicates:
            if error.duplicate_ids:
                self._resolved(group, error.duplicate_ids[0], created=False)
            else:
                unnamed.append((group, error))
        if unnamed:
            left = {id(g) for g in self._link_existing([g for g, _ in unnamed])}
            for group, error in unnamed:
                if id(group) in left:
                    group.fail(f"{error} (and no record found by phone or email)")

    def _update_records(self, chunk: Sequence[_Group]) -> list[dict[str, Any]]:
        records = []
        for group in chunk:
            body: dict[str, Any] = {}
            for state in group.states:  # later messages win
                body.update(self.fields(state.plan, create=False))
            sobject = self.sobject(group.states[0].plan.record_kind)
            records.append({"attributes": {"type": sobject}, "id": group.key, **body})
        return records

    def _update(self, groups: list[_Group]) -> None:
        for chunk in chunks(groups, BATCH):
            records = self._update_records(chunk)
            results = self._send(chunk, "PATCH", "composite/sobjects", records, idempotent=True)
            if results is not None:
                self._update_results(chunk, results)

    def _update_results(self, chunk: Sequence[_Group], results: list[dict[str, Any]]) -> None:
        for group, result in zip(chunk, results, strict=False):
            if result.get("success"):
                for state in group.states:
                    state.updated = True
                continue
            errors = parse_errors(result.get("errors"))
            if any(e.code == "DUPLICATES_DETECTED" for e in errors):
                # The org's rule says the record, with these values, duplicates another. The
                # record we matched keeps the activity; the objected fields stay unwritten.
                log.warning(
                    "salesforce.update_held_by_duplicate_rule",
                    record_id=group.key,
                    duplicates=[i for e in errors for i in e.duplicate_ids],
                )
                continue
            gone = any(e.code in GONE_CODES and "AccountId" not in e.fields for e in errors)
            group.fail(
                _describe(errors),
                retriable=gone or any(e.code in _TRANSIENT for e in errors),
                gone=(group.key,) if gone else (),
            )

    # -- tasks ---------------------------------------------------------------------------
    def task_fields(self, state: _State, *, create: bool) -> dict[str, Any]:
        activity = state.plan.activity
        marker_field = self.options.marker_field
        body = activity.body
        extra = [
            f"{k}: {v}" for k, v in activity.properties.items() if v and f"{k}: {v}" not in body
        ]
        fields: dict[str, Any] = {
            "Subject": task_subject(activity, marker_in_subject=not marker_field),
            "Description": _cut("Description", "\n".join([body, "", *extra]) if extra else body),
            "Status": "Completed",
            "Priority": "High" if activity.emergency else "Normal",
            "ActivityDate": activity.occurred_at.date().isoformat(),
            "WhoId": state.record_id,
            "CallType": "Inbound",  # an answered call: kept on every update
        }
        if marker_field:
            fields[marker_field] = stored_marker(activity.marker)
        fields.update(task_owner(state.plan))
        if create:
            fields["TaskSubtype"] = "Call"  # settable on insert only
        return fields

    def _log_tasks(self, states: list[_State]) -> None:
        creates = [s for s in states if not s.plan.activity.existing_id]
        updates = [s for s in states if s.plan.activity.existing_id]
        for chunk in chunks(updates, BATCH):
            groups = [_Group(str(s.plan.activity.existing_id), [s]) for s in chunk]
            records = [
                {
                    "attributes": {"type": "Task"},
                    "id": g.key,
                    **self.task_fields(g.states[0], create=False),
                }
                for g in groups
            ]
            results = self._send(groups, "PATCH", "composite/sobjects", records, idempotent=True)
            for group, result in zip(groups, results or [], strict=False):
                state = group.states[0]
                errors = [] if result.get("success") else parse_errors(result.get("errors"))
                if not errors:
                    state.activity_id = group.key
                elif self._who_gone(state, errors, named=True):
                    pass
                elif any(e.code in _TASK_GONE for e in errors):
                    creates.append(state)  # the Task itself was deleted: log the message anew
                else:
                    state.fail(
                        _describe(errors), retriable=any(e.code in _TRANSIENT for e in errors)
                    )
        for chunk in chunks(creates, BATCH):
            groups = [_Group(s.plan.activity.marker, [s]) for s in chunk]
            records = [
                {"attributes": {"type": "Task"}, **self.task_fields(s, create=True)} for s in chunk
            ]
            sent = self._send_create(groups, records, reconcile=self._tasks_missing)
            if sent is None:
                continue
            self._task_results(*sent)

    def _task_results(self, groups: Sequence[_Group], results: list[dict[str, Any]]) -> None:
        for group, result in zip(groups, results, strict=False):
            state = group.states[0]
            if result.get("success"):
                state.activity_id = str(result["id"])
                continue
            errors = parse_errors(result.get("errors"))
            if not self._who_gone(state, errors, named=False):
                state.fail(_describe(errors), retriable=any(e.code in _TRANSIENT for e in errors))

    @staticmethod
    def _who_gone(state: _State, errors: Sequence[SfError], *, named: bool) -> bool:
        """The record behind WhoId was deleted or merged away: report it gone, plan again.
        On a create WhoId is the only reference, so an error naming no field means it too."""
        for error in errors:
            if error.code in GONE_CODES and (
                "WhoId" in error.fields or not (named or error.fields)
            ):
                state.fail(str(error), retriable=True, gone=(str(state.record_id),))
                return True
        return False

    def _tasks_missing(self, groups: Sequence[_Group]) -> list[_Group]:
        """Reconcile after an ambiguous failure: Tasks that did land are not sent again."""
        found = self.lookup.find_activities([g.key for g in groups])
        left = []
        for group in groups:
            ref = found.get(group.key)
            if ref is None:
                left.append(group)
            else:
                group.states[0].activity_id = ref.activity_id
        return left

    # -- sending -------------------------------------------------------------------------
    def _send(
        self,
        groups: Sequence[_Group],
        method: str,
        path: str,
        records: list[dict[str, Any]],
        *,
        idempotent: bool,
        once: bool = False,
    ) -> list[dict[str, Any]] | None:
        """One Collections request; a whole-request rejection fails just these plans."""
        try:
            return self.client.collections(method, path, records, idempotent=idempotent, once=once)
        except (SalesforceMalformedRequest, SalesforceResourceNotFound) as exc:
            error = f"{method} {path} rejected: {summary(exc.content)}"
            log.error("salesforce.request_rejected", method=method, path=path, error=error)
            for group in groups:
                group.fail(error)
            return None

    def _send_create(
        self,
        groups: Sequence[_Group],
        records: list[dict[str, Any]],
        *,
        reconcile: Callable[[Sequence[_Group]], list[_Group]],
    ) -> tuple[list[_Group], list[dict[str, Any]]] | None:
        """A POST create is not idempotent: after an ambiguous failure, find what did land
        (``reconcile`` links those and returns the rest), then send only the rest. One loop,
        the client's retry policy: a try that failed after the org may have acted looks up
        before the next one sends, and a try refused before it ran is simply repeated."""
        record_of = {id(g): r for g, r in zip(groups, records, strict=True)}
        pending = list(groups)
        maybe_landed = [False]

        def attempt() -> tuple[list[_Group], list[dict[str, Any]]] | None:
            nonlocal pending
            if maybe_landed[0]:
                maybe_landed[0] = False
                pending = reconcile(pending)
                if not pending:
                    return None
            body = [record_of[id(g)] for g in pending]
            try:
                results = self._send(
                    pending, "POST", "composite/sobjects", body, idempotent=False, once=True
                )
            except TryAgain:
                raise  # refused before it ran: repeat as it is
            except RetriableError as exc:
                # No answer at all (a read timeout, a dropped connection): the org may still
                # be carrying the request out, so a look-up now can miss what is about to land
                # and a resend would write it twice. Leave it to the daemon, which retries
                # after its back-off and reconciles by marker first.
                unanswered = self.client.session.last_response is None
                # A long pause asked for goes to the daemon too, which waits it out and
                # reconciles by marker before it sends again.
                too_long = self.client.waits_too_long(exc.retry_after)
                if isinstance(exc, RateLimited) or unanswered or too_long:
                    raise
                log.info("salesforce.reconcile", records=len(pending), problem=str(exc))
                maybe_landed[0] = True
                raise TryAgain(exc, retry_after=exc.retry_after) from exc
            return None if results is None else (pending, results)

        return self.client.retry("POST composite/sobjects", attempt)
