"""Round-robin turns come from the state store: shared by replicas, kept across restarts."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from syncd.models import CrmUser
from syncd.owners import OwnerDirectory, OwnerFacts, parse_owner_settings, resolve_owner
from syncd.store.owners import take_turns
from syncd.store.store import Store

MEMBERS = [CrmUser(f"u{i}", f"rep{i}@example.com", f"Rep {i}") for i in range(3)]
SETTINGS = parse_owner_settings(
    {"owner_rules": ["round_robin"], "owner_round_robin": [u.email for u in MEMBERS]}, "t"
)


def test_turns_continue_after_a_restart_and_are_per_target(store_url: str) -> None:
    first = Store(store_url)
    first.migrate()
    assert take_turns(first, "hubspot", 3) == 0
    assert take_turns(first, "hubspot", 1) == 3
    assert take_turns(first, "salesforce", 2) == 0
    first.close()
    again = Store(store_url)  # a restarted daemon
    assert take_turns(again, "hubspot", 2) == 4
    again.close()


def test_a_turn_count_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="count"):
        take_turns(store, "t", 0)


@pytest.mark.postgres
def test_two_replicas_share_one_rotation_on_postgresql(postgres_url: str) -> None:
    """Two replicas (threads, each with its own engine) take turns at once: every turn is
    handed out exactly once and the owners come out evenly."""
    Store(postgres_url).migrate()
    replicas = [Store(postgres_url), Store(postgres_url)]
    taken: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def work(index: int) -> None:
        start.wait()
        for round_ in range(60):
            size = 1 + (round_ + index) % 4  # batches of 1..4 new callers
            first = take_turns(replicas[index], "crm", size)
            taken[index].extend(range(first, first + size))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in replicas:
        s.close()
    turns = taken[0] + taken[1]
    assert taken[0]
    assert taken[1]
    assert len(turns) == len(set(turns)), "a turn was handed out twice"
    assert sorted(turns) == list(range(len(turns))), "a turn was skipped"
    directory = OwnerDirectory.of(MEMBERS)
    owners = Counter(
        resolve_owner(SETTINGS, directory, OwnerFacts(new_record=True), turn).owner_id
        for turn in turns
    )
    assert set(owners) == {"u0", "u1", "u2"}
    assert max(owners.values()) - min(owners.values()) <= 1, owners
