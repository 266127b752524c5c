"""The HubSpot connector's memo of contacts by company word (pure: no HTTP)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

from syncd_hubspot.colleagues import ColleagueMemo
from syncd_hubspot.records import CONTACT_PROPERTIES

from syncd.match.names import normalize_company
from syncd.sandbox.generate import make_callers


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def contact(cid: str, company: str, first: str = "Pat", **extra: str) -> dict[str, Any]:
    return {"id": cid, "properties": {"firstname": first, "company": company, **extra}}


def ids(objs: list[dict[str, Any]] | None) -> set[str]:
    assert objs is not None
    return {o["id"] for o in objs}


def test_a_searched_word_keeps_only_contacts_carrying_it_until_the_ttl() -> None:
    clock = Clock()
    memo = ColleagueMemo(ttl=60, max_contacts=100, clock=clock, convert=dict)
    assert memo.get("plumbing", "acme plumbing") is None
    memo.put(
        "plumbing",
        clock(),
        [contact("1", "Acme Plumbing LLC"), contact("2", "Globex"), contact("3", "Best Plumbing")],
    )
    assert ids(memo.get("plumbing", "acme plumbing")) == {"1"}
    assert ids(memo.get("plumbing", "best plumbing")) == {"3"}
    clock.now += 59
    assert ids(memo.get("plumbing", "acme plumbing")) == {"1"}
    clock.now += 1
    assert memo.get("plumbing", "acme plumbing") is None


def test_own_writes_join_the_words_they_carry_and_updates_merge() -> None:
    clock = Clock()
    memo = ColleagueMemo(ttl=60, max_contacts=100, clock=clock, convert=dict)
    memo.put("plumbing", clock(), [contact("1", "Acme Plumbing")])
    memo.note_written([contact("2", "Best Plumbing Inc", first="Sam"), contact("3", "Initech")])
    memo.note_written([{"id": "1", "properties": {"phone": "+13125550100"}}])  # an update
    held = {o["id"]: o["properties"] for o in memo.get("plumbing", "acme plumbing") or []}
    assert held == {"1": {"firstname": "Pat", "company": "Acme Plumbing", "phone": "+13125550100"}}
    assert ids(memo.get("plumbing", "best plumbing")) == {"2"}


def test_a_word_searched_after_an_own_write_still_gets_it_despite_index_lag() -> None:
    clock = Clock()
    memo = ColleagueMemo(ttl=60, max_contacts=100, clock=clock, convert=dict)
    memo.note_written([contact("9", "Acme Plumbing")])
    memo.put("plumbing", clock(), [])  # the search did not show it yet
    assert ids(memo.get("plumbing", "acme plumbing")) == {"9"}
    clock.now += 61
    memo.put("plumbing", clock(), [])  # older than the ttl: the search must show it by now
    assert ids(memo.get("plumbing", "acme plumbing")) == set()


def test_a_full_memo_keeps_what_it_holds_until_it_expires() -> None:
    clock = Clock()
    memo = ColleagueMemo(ttl=60, max_contacts=3, clock=clock, convert=dict)
    memo.put("alpha", clock(), [contact("1", "Alpha"), contact("2", "Alpha Co")])
    memo.put("beta", clock(), [contact("3", "Beta"), contact("4", "Beta Co")])
    assert ids(memo.get("alpha", "alpha")) == {"1", "2"}
    assert memo.get("beta", "beta") is None  # no room: searched each time
    memo.note_written([contact("5", "Alpha Inc"), contact("6", "Alpha Ltd")])
    assert memo.get("alpha", "alpha") is None  # could not stay complete: dropped, not kept partial
    clock.now += 60
    memo.put("beta", clock(), [contact("3", "Beta"), contact("4", "Beta Co")])
    assert ids(memo.get("beta", "beta")) == {"3", "4"}


def test_a_zero_ttl_remembers_nothing() -> None:
    clock = Clock()
    memo = ColleagueMemo(ttl=0, max_contacts=100, clock=clock, convert=dict)
    memo.put("plumbing", clock(), [contact("1", "Acme Plumbing")])
    memo.note_written([contact("2", "Best Plumbing")])
    assert memo.get("plumbing", "best plumbing") is None


def test_a_search_is_gathered_page_by_page_and_kept_only_once_complete() -> None:
    clock = Clock()
    memo = ColleagueMemo(ttl=60, max_contacts=100, clock=clock, convert=dict)
    pending = memo.collect({"plumbing", "dental"}, clock())
    pending.add([contact("1", "Acme Plumbing"), contact("2", "Globex")])
    pending.add([contact("3", "Acme Plumbing Inc"), contact("1", "Acme Plumbing")])  # again
    assert memo.get("plumbing", "acme plumbing") is None  # not known complete yet
    pending.commit()
    assert ids(memo.get("plumbing", "acme plumbing")) == {"1", "3"}
    assert ids(memo.get("dental", "acme dental")) == set()  # searched: nobody carries it


def test_an_abandoned_search_leaves_nothing_behind() -> None:
    clock = Clock()
    memo = ColleagueMemo(ttl=60, max_contacts=100, clock=clock, convert=dict)
    memo.put("plumbing", clock(), [contact("1", "Acme Plumbing")])
    clock.now += 60  # expired, so searched again; the search fails after a page
    memo.collect({"plumbing"}, clock()).add([contact("2", "Acme Plumbing")])
    assert memo.get("plumbing", "acme plumbing") is None


def test_a_search_gathers_only_what_fits_giving_up_the_largest_word() -> None:
    clock = Clock()
    memo = ColleagueMemo(ttl=60, max_contacts=3, clock=clock, convert=dict)
    pending = memo.collect({"alpha", "beta"}, clock())
    pending.add([contact("1", "Alpha"), contact("2", "Beta"), contact("3", "Alpha Co")])
    pending.add([contact("4", "Beta Co")])  # no room for a fourth: alpha, the largest, goes
    assert pending.held == 2
    pending.commit()
    assert memo.get("alpha", "alpha") is None  # searched again when asked
    assert ids(memo.get("beta", "beta")) == {"2", "4"}  # "Beta Co" is Beta


def test_a_held_colleague_takes_under_half_a_kilobyte() -> None:
    """The memo is most of what a large backfill holds: bytes counted, not timed."""
    callers = make_callers(2000, seed=3)
    objs = [
        json.loads(  # decoded as the transport decodes a search page
            json.dumps(
                {
                    "id": str(10**9 + i),
                    "properties": {
                        "firstname": c.first_name,
                        "lastname": c.last_name,
                        "email": c.email,
                        "phone": c.e164,
                        "mobilephone": None,
                        "company": f"Word{i // 100} {c.company}",
                        "associatedcompanyid": str(5000 + i),
                        "createdate": "2026-01-01T00:00:00.000Z",
                        "lastmodifieddate": "2026-01-01T00:00:00.000Z",
                    },
                }
            )
        )
        for i, c in enumerate(callers)
    ]
    clock = Clock()
    memo = ColleagueMemo(
        ttl=60, max_contacts=10_000, clock=clock, convert=dict, keep=CONTACT_PROPERTIES
    )
    gc.collect()
    tracemalloc.start()
    try:
        pending = memo.collect({f"word{n}" for n in range(20)}, clock())
        for start in range(0, len(objs), 200):
            pending.add(objs[start : start + 200])
        pending.commit()
        del objs  # what the memo holds is all that is left of the answer
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(memo.get("word0", normalize_company(f"Word0 {callers[0].company}")) or []) >= 1
    assert held / len(callers) < 500  # ~0.8 KB as a dict of properties
