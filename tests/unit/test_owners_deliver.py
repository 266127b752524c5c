"""The owner step inside the delivery loop, against a real store (SQLite, and PostgreSQL when
it answers) and a fake CRM that can list its users (the ListsOwners capability). Real
connectors: syncd/contract."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from recording_crm import FakeConnector
from sqlalchemy import select

from syncd.config import DaemonSettings, TargetSettings
from syncd.connector import ListsOwners, TargetContext
from syncd.deliver import deliver_target
from syncd.dryrun_connector import DryRunConnector
from syncd.dryrun_connector import create as dry_run_connector
from syncd.models import (
    Action,
    ActivityRef,
    CheckResult,
    CrmRecord,
    CrmUser,
    KeyKind,
    MatchKey,
    Message,
    Outcome,
    Plan,
)
from syncd.owners import parse_owner_settings
from syncd.store.owners import owner_summary, owners_assigned
from syncd.store.schema import owner_turns
from syncd.store.store import Store

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
USERS = [
    CrmUser("u1", "ana@example.com", "Ana Lopez"),
    CrmUser("u2", "ben@example.com", "Ben Okafor"),
    CrmUser("u3", "old@example.com", "Old Hand", active=False),
    CrmUser("u9", "office@example.com", "Office"),
]


@dataclass
class OwnedCrm:
    """A CRM that lists users, keeps each record's owner and reports it on lookup/read."""

    name: str = "crm"
    users: list[CrmUser] = field(default_factory=lambda: list(USERS))
    records: dict[MatchKey, list[CrmRecord]] = field(default_factory=dict)
    by_id: dict[str, CrmRecord] = field(default_factory=dict)
    plans: list[Plan] = field(default_factory=list)
    owner_reads: int = 0
    reads: int = 0

    def owners(self) -> Sequence[CrmUser]:
        self.owner_reads += 1
        return list(self.users)

    def lookup(self, keys: Sequence[MatchKey]) -> Mapping[MatchKey, Sequence[CrmRecord]]:
        return {k: self.records.get(k, []) for k in keys}

    def read(self, kind: str, ids: Sequence[str]) -> Mapping[str, CrmRecord]:
        self.reads += 1
        return {i: self.by_id[i] for i in ids if i in self.by_id}

    def apply(self, plans: Sequence[Plan]) -> Sequence[Outcome]:
        self.plans.extend(plans)
        out = []
        for plan in plans:
            rid = plan.record_id or f"new:{plan.caller_key}"
            created = plan.action is Action.CREATE
            if created and rid not in self.by_id:
                owner = plan.owner_id if plan.owner_on_record else "integration"
                record = CrmRecord(rid, "contact", owner_id=owner)
                self.by_id[rid] = record
                for key in plan.keys:
                    self.records.setdefault(key, []).append(record)
            out.append(Outcome(plan.delivery_id, True, rid, created=created, activity_id="a"))
        return out

    def find_activities(self, markers: Sequence[str]) -> Mapping[str, ActivityRef]:
        return {}

    def check(self) -> Sequence[CheckResult]:
        return []

    def close(self) -> None:
        return None


OWNERS: dict[str, Any] = {
    "owners": {"Front desk": "office@example.com", "Old team": "old@example.com"},
    "owner_round_robin": ["ana@example.com", "old@example.com", "ben@example.com"],
    "default_owner": "office@example.com",
    "owner_on_new_records": True,
}


def settings(table: dict[str, Any] | None = None) -> TargetSettings:
    return TargetSettings(
        name="crm",
        type="fake",
        owners=parse_owner_settings(OWNERS if table is None else table, "t"),
    )


def msg(mid: str, phone: str, to: str = "", first: str = "Pat") -> Message:
    return Message(
        account="main",
        message_id=mid,
        created_at=T0,
        first_name=first,
        last_name="Caller",
        phone=phone,
        delivered_to=to,
        content=f"message {mid}",
    )


def deliver(store: Store, crm: OwnedCrm, target: TargetSettings, **kw: Any) -> None:
    deliver_target(
        store,
        crm,
        target,
        DaemonSettings(worker_id="w1", batch_size=kw.pop("batch_size", 50)),
        regions={"main": "US"},
        clock=lambda: T0,
        **kw,
    )


def test_the_fake_has_the_capability() -> None:
    assert isinstance(OwnedCrm(), ListsOwners)


def test_new_callers_rotate_one_turn_per_caller_and_mapped_names_win(store: Store) -> None:
    crm = OwnedCrm()
    batch = [
        msg("m1", "(415) 555-0001", "Sales line"),
        msg("m2", "(415) 555-0001", "Sales line"),  # the same new caller: one record, one turn
        msg("m3", "(415) 555-0002", "nobody in particular"),
        msg("m4", "(415) 555-0003", "Front Desk"),  # mapped
        msg("m5", "(415) 555-0004", "ben okafor"),  # a user's name
        msg("m6", "(415) 555-0005", ""),
    ]
    store.ingest("main", batch, ["crm"], now=T0)
    deliver(store, crm, settings())
    got = {p.message.message_id: (p.owner_id, p.owner_rule) for p in crm.plans}
    assert got == {
        "m1": ("u1", "round_robin"),
        "m2": ("u1", "round_robin"),
        "m3": ("u2", "round_robin"),  # the inactive member is skipped
        "m4": ("u9", "mapping"),
        "m5": ("u2", "name"),
        "m6": ("u1", "round_robin"),
    }
    assert all(p.owner_on_record for p in crm.plans)
    with store.engine.connect() as conn:
        assert conn.execute(select(owner_turns.c.next_turn)).scalar_one() == 3
    assert owners_assigned(store) == {"crm": 6}


def test_a_known_caller_goes_to_the_records_owner_without_asking_the_crm_again(
    store: Store,
) -> None:
    crm = OwnedCrm()
    store.ingest("main", [msg("m1", "(415) 555-0001", "Front desk")], ["crm"], now=T0)
    deliver(store, crm, settings())
    store.ingest("main", [msg("m2", "(415) 555-0001", "Front desk")], ["crm"], now=T0)
    reads = crm.reads
    deliver(store, crm, settings())
    second = crm.plans[-1]
    assert second.action is not Action.CREATE
    assert (second.owner_id, second.owner_rule) == ("u9", "record")  # the owner set at create
    assert crm.reads == reads  # the match cache answered; the owner came from the store
    assert crm.owner_reads == 1  # the users were read once and reused


def test_an_owner_made_inactive_falls_through_and_status_says_why(store: Store) -> None:
    crm = OwnedCrm()
    rec = CrmRecord("r1", "contact", first_name="Pat", last_name="Caller", owner_id="u3")
    crm.records[MatchKey(KeyKind.PHONE, "+14155550001")] = [rec]
    crm.by_id["r1"] = rec
    store.ingest("main", [msg("m1", "(415) 555-0001", "Old team")], ["crm"], now=T0)
    deliver(store, crm, settings())
    plan = crm.plans[-1]
    assert (plan.owner_id, plan.owner_rule) == ("u9", "default")
    summary = owner_summary(store)["crm"]
    assert summary["by_rule"] == {"default": 1}
    (fell,) = summary["fell_back"]
    assert fell["message_id"] == "m1"
    assert "record: record owner old@example.com is inactive" in fell["why"]
    assert "mapping: mapped user old@example.com is inactive" in fell["why"]
    assert "round_robin: only for new records" in fell["why"]


def test_without_owner_settings_nothing_changes(store: Store) -> None:
    crm = OwnedCrm()
    store.ingest("main", [msg("m1", "(415) 555-0001", "Ana Lopez")], ["crm"], now=T0)
    deliver(store, crm, settings({}))
    assert crm.plans[0].owner_id is None
    assert crm.plans[0].owner_rule == ""
    assert crm.owner_reads == 0
    assert owners_assigned(store) == {}


def test_the_daemons_dry_run_wrapper_still_lists_the_crms_users(store: Store) -> None:
    """``syncd run --dry-run`` wraps the connector (syncd.dryrun_connector): the wrapper must
    keep the inner connector's user list, or owner rules silently assign nobody."""
    crm = OwnedCrm()
    wrapper = dry_run_connector(TargetContext(name="crm", options={"inner": crm}))
    assert isinstance(wrapper, ListsOwners)
    store.ingest("main", [msg("m1", "(415) 555-0001")], ["crm"], now=T0)
    deliver_target(
        store,
        wrapper,
        settings(),
        DaemonSettings(worker_id="w1", batch_size=50),
        regions={"main": "US"},
        clock=lambda: T0,
        dry_run=True,
    )
    assert isinstance(wrapper, DryRunConnector)
    (recorded,) = wrapper.plans
    assert recorded.owner_rule == "round_robin"
    assert recorded.owner_id in {u.id for u in USERS if u.active}
    assert crm.plans == []  # nothing reached the CRM


def test_a_dry_run_of_a_connector_without_users_lists_none() -> None:
    wrapper = dry_run_connector(TargetContext(name="crm", options={"inner": FakeConnector()}))
    assert not isinstance(wrapper, ListsOwners)


def test_a_dry_run_takes_no_turn(store: Store) -> None:
    crm = OwnedCrm()
    store.ingest("main", [msg("m1", "(415) 555-0001")], ["crm"], now=T0)
    deliver(store, crm, settings(), dry_run=True)
    assert crm.plans[0].owner_rule == "round_robin"
    with store.engine.connect() as conn:
        assert conn.execute(select(owner_turns)).first() is None
