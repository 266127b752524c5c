"""``Plan.in_doubt``: every connector finds what an earlier attempt wrote before writing again.

An attempt may reach the CRM and die before its outcome is recorded (a SIGKILL, a hand-back,
a lost answer). The daemon then sends the same plan with ``in_doubt=True``, and the connector
must find each part -- the contact by caller key or id, the activity and the emergency task
by marker -- through an immediately consistent read (the search index lags a minute here),
write only what is missing, and say ``reconciled`` when nothing was. Everything is counted at
the emulator.

The interruption is a crash inside the connector's own request loop: the request observer
raises (a ``BaseException``, which no connector may swallow) right after the CRM answered the
N-th write, so the write has landed and nothing after it happened.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from syncd.connector import Connector, TargetContext, load_factory
from syncd.contract.harness import Crm, message
from syncd.models import Outcome, Plan


class Crash(BaseException):
    """The process died here: nothing after this point ran."""


def crashing_connector(crm: Crm, after_writes: int) -> Connector:
    """A connector of ``crm``'s type that dies right after the CRM answered its
    ``after_writes``-th state-changing request (counted by the emulator)."""
    start = crm.emulator.write_requests()

    def observe(target: str, endpoint: str, status: int, waited: float) -> None:
        if crm.emulator.write_requests() - start >= after_writes:
            raise Crash(endpoint)

    context = TargetContext(
        name=crm.type, options=crm.emulator.connector_options(), observe=observe
    )
    return load_factory(crm.type)(context)


def crash(crm: Crm, plans: list[Plan], after_writes: int, *, must: bool = True) -> None:
    """Apply ``plans`` and die after the CRM answered ``after_writes`` writes. With
    ``must=False`` the connector may finish first, having needed fewer writes."""
    connector = crashing_connector(crm, after_writes)
    try:
        connector.apply(plans)
    except Crash:
        return
    finally:
        connector.close()
    assert not must, f"the connector finished in under {after_writes} write(s)"


def parts(crm: Crm, plan: Plan) -> tuple[int, int]:
    """(contacts named like the plan's caller, activities carrying its marker)."""
    last = plan.message.last_name
    contacts = [c for c in crm.emulator.contacts() if c.last_name == last]
    return len(contacts), len(crm.activities(plan.activity.marker))


def in_doubt(plans: list[Plan]) -> list[Plan]:
    return [replace(p, in_doubt=True) for p in plans]


def new_caller(crm: Crm, n: int, *, emergency: bool = False) -> Plan:
    msg = message(
        first_name="Dana",
        last_name=f"Doubt{n}",
        phone=f"(415) 392-{7400 + n:04d}",
        content=f"Message {n}: the boiler is leaking." if emergency else f"Message {n}.",
        emergency=emergency,
    )
    return crm.new_plan(msg)


def expected_activities(crm: Crm, *, emergency: bool) -> int:
    """How many activities one message makes on this CRM when nothing goes wrong (a note
    and a task for an emergency on HubSpot, for instance): applied once, uninterrupted."""
    plan = new_caller(crm, 90 + emergency, emergency=emergency)
    crm.apply_one(plan)
    return parts(crm, plan)[1]


def apply_ok(crm: Crm, plans: list[Plan]) -> list[Outcome]:
    outcomes = list(crm.connector.apply(plans))
    assert [o.ok for o in outcomes] == [True] * len(plans), [o.error for o in outcomes]
    return outcomes


@pytest.mark.parametrize("emergency", [False, True])
def test_a_plan_applied_twice_in_doubt_is_reconciled_not_repeated(
    crm: Crm, emergency: bool
) -> None:
    want = expected_activities(crm, emergency=emergency)
    plan = new_caller(crm, 1, emergency=emergency)
    first = crm.apply_one(plan)
    writes = crm.emulator.write_requests()

    [again] = apply_ok(crm, in_doubt([plan]))

    assert again.reconciled
    assert (again.record_id, again.activity_id) == (first.record_id, first.activity_id)
    assert not again.created
    assert parts(crm, plan) == (1, want)
    assert crm.emulator.write_requests() == writes, "a reconciled plan writes nothing"


def test_a_known_callers_plan_in_doubt_is_reconciled(crm: Crm) -> None:
    known = crm.emulator.seed_contact(first_name="Kim", last_name="Known", phone="(212) 639-2081")
    msg = message(first_name="Kim", last_name="Known", phone="212-639-2081", content="Hi.")
    plan = crm.existing_plan(msg, crm.connector.read("contact", [known])[known])
    first = crm.apply_one(plan)

    [again] = apply_ok(crm, in_doubt([plan]))

    assert again.reconciled
    assert again.activity_id == first.activity_id
    assert parts(crm, plan) == (1, 1)


def test_a_plan_in_doubt_that_never_reached_the_crm_is_written_once(crm: Crm) -> None:
    plan = new_caller(crm, 2)

    [outcome] = apply_ok(crm, in_doubt([plan]))

    assert not outcome.reconciled
    assert outcome.created
    assert outcome.activity_id
    assert parts(crm, plan) == (1, 1)


@pytest.mark.parametrize(
    ("emergency", "after_writes", "what"),
    [
        (False, 1, "the contact"),
        (True, 1, "the contact"),
        (True, 2, "the contact and the activity"),
    ],
)
def test_an_interruption_between_parts_leaves_every_part_once(
    crm: Crm, emergency: bool, after_writes: int, what: str
) -> None:
    want = expected_activities(crm, emergency=emergency)
    plan = new_caller(crm, 3, emergency=emergency)

    crash(crm, [plan], after_writes)  # dies once the CRM holds `what`
    writes = crm.emulator.write_requests()
    [outcome] = apply_ok(crm, in_doubt([plan]))

    assert parts(crm, plan) == (1, want), f"after {what} was written"
    # A connector that writes several parts in one request (Salesforce's composite) may find
    # them all; whatever it found, `reconciled` says whether it had to write anything.
    wrote = crm.emulator.write_requests() > writes
    assert outcome.reconciled is not wrote
    assert outcome.record_id
    assert outcome.activity_id


def test_a_batch_in_doubt_writes_only_the_parts_each_plan_lacks(crm: Crm) -> None:
    want = expected_activities(crm, emergency=True)
    done = [new_caller(crm, n, emergency=True) for n in (10, 11)]
    apply_ok(crm, done)
    cut = [new_caller(crm, n, emergency=True) for n in (12, 13)]
    crash(crm, cut, after_writes=2)  # on HubSpot: both contacts and notes, no task yet
    fresh = [new_caller(crm, n, emergency=True) for n in (14, 15)]

    outcomes = apply_ok(crm, in_doubt(done + cut + fresh))

    reconciled = [o.reconciled for o in outcomes]
    assert reconciled[:2] == [True, True], "everything was there"
    assert reconciled[4:] == [False, False], "nothing was there"
    for plan in done + cut + fresh:
        assert parts(crm, plan) == (1, want), plan.message.last_name


def test_reconciliation_is_repeatable(crm: Crm) -> None:
    """Dying during the reconciliation itself and reconciling again changes nothing."""
    want = expected_activities(crm, emergency=True)
    plan = new_caller(crm, 20, emergency=True)
    crash(crm, [plan], after_writes=1)
    # Found the contact, wrote the activity (or, where one request wrote both, found all).
    crash(crm, in_doubt([plan]), after_writes=1, must=False)

    [outcome] = apply_ok(crm, in_doubt([plan]))
    [again] = apply_ok(crm, in_doubt([plan]))

    assert parts(crm, plan) == (1, want)
    assert again.reconciled
    assert again.activity_id == outcome.activity_id
