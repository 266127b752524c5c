"""The sync log on every backend: the store writes an event with each state change, in the
same transaction, and the read side (syncd.history) tells them back per attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from syncd.console.actions import retry_dead
from syncd.history import (
    Masker,
    dead_groups,
    dead_ids,
    find_messages,
    message_history,
    overview,
    reason_key,
    review_items,
)
from syncd.models import Message
from syncd.store.store import DeliveryResult, State, Store

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def _message(message_id: str, phone: str) -> Message:
    return Message(
        account="main",
        message_id=message_id,
        created_at=NOW,
        first_name="Ada",
        last_name="Lovelace",
        phone=phone,
        email="ada@example.com",
        content=f"call me back on {phone}",
    )


def _log(store: Store, message_id: str, target: str) -> list[tuple[str, int | None]]:
    (entry,) = message_history(store, message_id)
    (delivery,) = [d for d in entry["deliveries"] if d["target"] == target]
    return [(e["kind"], e["attempt"]) for e in delivery["events"]]


def test_each_state_change_is_logged_with_its_attempt(store: Store) -> None:
    store.ingest("main", [_message("m1", "(415) 555-0100")], ["crm"], now=NOW)
    (claimed,) = store.claim("crm", 10, "w1", 60, now=NOW)
    store.record(
        "crm",
        [
            DeliveryResult(
                claimed.delivery_id,
                State.RETRY,
                error="429 too many",
                next_attempt_at=NOW,
                decision="existing by phone +14155550100",
            )
        ],
        worker="w1",
        now=NOW,
    )
    (claimed,) = store.claim("crm", 10, "w1", 60, now=NOW + timedelta(seconds=1))
    store.release([claimed.delivery_id], worker="w1", error="shutting down", refund_attempt=True)
    (claimed,) = store.claim("crm", 10, "w2", 60, now=NOW + timedelta(seconds=2))
    store.record(
        "crm",
        [DeliveryResult(claimed.delivery_id, State.DEAD, error="400 rejected: bad field")],
        worker="w2",
    )
    assert retry_dead(store, [claimed.delivery_id]) == 1
    (claimed,) = store.claim("crm", 10, "w2", 60)
    store.record(
        "crm",
        [
            DeliveryResult(
                claimed.delivery_id,
                State.DONE,
                record_id="c-9",
                record_kind="contact",
                activity_id="a-1",
                action="update",
                decision="existing by phone +14155550100",
            )
        ],
        worker="w2",
    )
    assert store.replay("m1") == 1

    assert _log(store, "m1", "crm") == [
        ("claimed", 1), ("retry", 1),
        ("claimed", 2), ("released", 2),
        ("claimed", 2), ("dead", 2),
        ("retried", None),
        ("claimed", 1), ("done", 1),
        ("replayed", None),
    ]  # fmt: skip
    (entry,) = message_history(store, "m1")
    (delivery,) = entry["deliveries"]
    events = delivery["events"]
    assert events[1]["decision"] == "existing by phone +14155550100"
    assert events[3]["error"] == "shutting down"
    assert events[3]["worker"] == "w1"
    assert events[6]["worker"] == "console"
    assert (events[8]["record_id"], events[8]["activity_id"]) == ("c-9", "a-1")
    assert delivery["state"] == State.PENDING  # replayed
    # Shown to a person: the phone in the decision and the text is masked.
    shown = Masker().view(entry)
    assert "555-0100" not in str(shown)
    assert "+14155550100" not in str(shown)
    assert "a***@example.com" in str(shown)
    assert "+14155550100" in str(Masker(show_pii=True).view(entry))


def test_find_messages_by_id_and_by_any_spelling_of_the_phone(store: Store) -> None:
    store.ingest(
        "main",
        [
            _message("m1", "(415) 555-0100"),
            _message("m2", "+1 415 555 0100"),
            _message("m3", "415-555-0199"),
        ],
        ["crm"],
        now=NOW,
    )
    assert [f["message_id"] for f in find_messages(store, "m3")] == ["m3"]
    found = find_messages(store, "4155550100")
    assert sorted(f["message_id"] for f in found) == ["m1", "m2"]
    assert find_messages(store, "+1 (415) 555-0142") == []
    assert find_messages(store, "  ") == []


def test_review_dead_groups_and_overview(store: Store) -> None:
    store.ingest("main", [_message(f"m{i}", "(415) 555-0100") for i in range(4)], ["crm"])
    claimed = store.claim("crm", 10, "w1", 60)
    results = [
        DeliveryResult(claimed[0].delivery_id, State.REVIEW, error="2 equally good",
                       review_candidates=["c-1", "c-2"]),
        DeliveryResult(claimed[1].delivery_id, State.DEAD, error="record 123 rejected"),
        DeliveryResult(claimed[2].delivery_id, State.DEAD, error="record 456 rejected"),
        DeliveryResult(claimed[3].delivery_id, State.DONE, record_id="c-3"),
    ]  # fmt: skip
    store.record("crm", results, worker="w1")
    (item,) = review_items(store)
    assert item["candidates"] == ["c-1", "c-2"]
    assert item["message"]["phone"] == "(415) 555-0100"
    assert review_items(store, delivery_id=claimed[1].delivery_id) == []
    (group,) = dead_groups(store)
    assert (group["target"], group["reason"], len(group["items"])) == (
        "crm", "record # rejected", 2,
    )  # fmt: skip
    assert sorted(dead_ids(store, "crm", "record # rejected")) == sorted(
        [claimed[1].delivery_id, claimed[2].delivery_id]
    )
    assert dead_ids(store, "other", "record # rejected") == []
    assert reason_key("contact 'Ada' 12 failed") == "contact '…' # failed"

    until = datetime.now(UTC) + timedelta(hours=1)
    view = overview(store, {"main": ["crm"]}, ["crm"], paused={"crm": (until, "daily limit")})
    (target,) = view["targets"]
    assert target["states"]["dead"] == 2
    assert target["states"]["review"] == 1
    assert target["paused"] is True
    assert target["paused_reason"] == "daily limit"
    assert target["last_success"] is not None
    assert view["accounts"][0]["cursor"] is None
