"""syncd.partition: the batches of one round share no caller, whatever links them."""

from __future__ import annotations

from typing import Any

from syncd.match.keys import CallerKeys, extract_keys
from syncd.models import Message
from syncd.partition import link_keys, partition
from syncd.store.store import Claimed


def claimed(i: int, intent: dict[str, Any] | None = None, **fields: Any) -> Claimed:
    message = Message(account="a", message_id=f"m{i}", **fields)
    return Claimed(i, "t", message, 1, 1, None, None, in_doubt=intent is not None, intent=intent)


def split(items: list[Claimed], size: int, width: int) -> list[list[Claimed]]:
    keys = {c.delivery_id: extract_keys(c.message, "US") for c in items}
    return partition(items, keys, size, width)


def owner_of_keys(batches: list[list[Claimed]]) -> dict[str, int]:
    owner: dict[str, int] = {}
    for index, batch in enumerate(batches):
        for c in batch:
            for key in link_keys(c, extract_keys(c.message, "US")):
                assert owner.setdefault(key, index) == index, f"{key} is in two batches"
    return owner


def test_one_caller_spelt_three_ways_stays_in_one_batch() -> None:
    # Email and phone; the phone alone, written otherwise; the email alone, another case.
    items = [
        claimed(1, email="jane@acme.example", phone="(207) 946-0958"),
        *[claimed(i, phone=f"+1 207 555 {1000 + i}") for i in range(2, 8)],
        claimed(8, phone="207.946.0958"),
        claimed(9, email="JANE@acme.example"),
        *[claimed(i, email=f"p{i}@x.example") for i in range(10, 16)],
    ]
    batches = split(items, size=4, width=4)
    assert len(batches) == 4
    owner_of_keys(batches)
    jane = {c.delivery_id for b in batches for c in b if c.delivery_id in (1, 8, 9)}
    (home,) = [b for b in batches if {c.delivery_id for c in b} & jane]
    assert {1, 8, 9} <= {c.delivery_id for c in home}


def test_one_company_stays_in_one_batch_and_sizes_even_out() -> None:
    items = [
        claimed(
            i,
            first_name=f"P{i}",
            last_name="Doe",
            company=f"Initech {i % 3}",
            phone=f"+1207555{1000 + i}",
        )
        for i in range(1, 31)
    ]
    batches = split(items, size=10, width=4)
    assert len(batches) == 3  # 30 deliveries, batches of 10
    owner_of_keys(batches)
    assert sorted(len(b) for b in batches) == [10, 10, 10]
    assert all([c.delivery_id for c in b] == sorted(c.delivery_id for c in b) for b in batches)


def test_in_doubt_caller_key_and_record_link_their_deliveries() -> None:
    items = [
        claimed(1, {"caller_key": "k1", "action": "create"}, phone="+12075550101"),
        claimed(2, {"caller_key": "k1", "action": "create"}, email="other@x.example"),
        claimed(3, {"record_id": "r9", "action": "update"}, phone="+12075550103"),
        claimed(4, {"record_id": "r9", "action": "update"}, phone="+12075550104"),
        *[claimed(i, phone=f"+1207555{2000 + i}") for i in range(5, 13)],
    ]
    batches = split(items, size=3, width=4)
    owner = owner_of_keys(batches)
    assert "caller:k1" in owner
    assert "record:r9" in owner


def test_a_small_claim_is_one_batch_as_before() -> None:
    items = [claimed(i, phone=f"+1207555{1000 + i}") for i in range(1, 50)]
    assert split(items, size=500, width=4) == [items]
    assert split([], size=500, width=4) == []


def test_keys_cover_what_a_match_links_by() -> None:
    c = claimed(
        1, {"caller_key": "k"}, email="a@b.example", phone="(207) 946-0958", company="Acme, LLC"
    )
    keys: CallerKeys = extract_keys(c.message, "US")
    linked = link_keys(c, keys)
    assert "email:a@b.example" in linked
    assert "phone:+12079460958" in linked
    assert f"company:{keys.company}" in linked
    assert keys.company
    assert "caller:k" in linked
