"""The contacts at a company word, remembered for a short while.

The company-and-name rule needs "every contact whose company reads like the caller's". HubSpot
finds them with one ``company CONTAINS_TOKEN <word>`` filter group per company, five groups a
search, under the ~5 searches/s limit, and a backfill asks about the same words batch after
batch: at 10,000 messages those groups were most of the searches. A search for a word returns
*every* contact carrying it, so its answer stays complete until someone writes a contact:

* syncd's own writes are folded in as they are made (:meth:`ColleagueMemo.note_written`), so a
  contact created in one batch is a candidate in the next;
* anyone else's are seen once the word's answer is ``ttl`` seconds old and it is searched
  again. HubSpot's search index already hides a new contact for a while after it is written,
  so the rule has that blind spot anyway; ``ttl`` bounds how much longer it gets.

The memo is most of what a large backfill holds, so it holds little. A search's answer is
gathered page by page (:meth:`ColleagueMemo.collect`), never decoded whole, and only as far as
there is room for it. A contact is kept as its id, its normalized company (shared by its
colleagues) and its kept properties packed into one string: about 0.4 KB, against 0.8 KB as a
dict of its properties, and turned into a record only when a key asks for its company.
Bounded by ``max_contacts`` remembered in all (40,000 by default, at most about 17 MB) so
memory stays bounded however long the backfill; a full memo keeps the words it holds until
they expire. Too small a memo is costly at scale: a word's search returns every contact
carrying it, 200 a page, so a word searched again in a large portal costs several requests.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from syncd.plugin import normalize_company

__all__ = ["ColleagueMemo", "Pending", "company_words"]

R = TypeVar("R")
# (normalized company, the kept properties' values as a JSON list): two objects a contact,
# where a dict of its properties would be a dozen.
_Held = tuple[str, str]


def company_words(obj: Mapping[str, Any]) -> set[str]:
    """The words of a contact object's company, as company keys are normalized."""
    props = obj.get("properties")
    company = props.get("company") if isinstance(props, Mapping) else None
    return set(normalize_company(str(company or "")).split())


class ColleagueMemo(Generic[R]):
    """Company word -> the contacts carrying it (by id); ``convert`` makes the records a
    :meth:`get` returns. Thread-safe."""

    def __init__(
        self,
        *,
        ttl: float,
        max_contacts: int,
        clock: Callable[[], float],
        convert: Callable[[Mapping[str, Any]], R],
        keep: Iterable[str] = ("firstname", "lastname", "email", "phone", "company"),
    ) -> None:
        self._ttl = ttl
        self._max = max_contacts
        self._clock = clock
        self._convert = convert
        self._keep = tuple(dict.fromkeys(keep))  # the properties ``convert`` reads
        self._lock = threading.Lock()
        # word -> (searched at, {contact id: held}); oldest first
        self._words: OrderedDict[str, tuple[float, dict[str, _Held]]] = OrderedDict()
        self._size = 0
        # syncd's own writes of the last ``ttl`` seconds: a search may not show them yet
        # (index lag), so a word searched now still gets them.
        self._recent: OrderedDict[str, tuple[float, _Held]] = OrderedDict()

    # -- held contacts ---------------------------------------------------------------------
    def _hold(self, props: Mapping[str, Any]) -> _Held:
        """Only what a record is made of: not timestamps or the decoded answer's baggage."""
        values = [str(v) if (v := props.get(k)) else "" for k in self._keep]
        # Interned: the contacts at one company share one copy of its normalized name.
        company = sys.intern(normalize_company(str(props.get("company") or "")))
        return company, json.dumps(values, separators=(",", ":"))

    def _props(self, held: _Held) -> dict[str, str]:
        return {k: v for k, v in zip(self._keep, json.loads(held[1]), strict=True) if v}

    # -- reading ---------------------------------------------------------------------------
    def get(self, word: str, company: str) -> list[R] | None:
        """The contacts carrying ``word`` whose normalized company is ``company``, or None
        when the word must be searched (again)."""
        if self._ttl <= 0:
            return None
        with self._lock:
            entry = self._words.get(word)
            if entry is None:
                return None
            if self._clock() - entry[0] >= self._ttl:
                self._drop(word)
                return None
            hits = [(cid, held) for cid, held in entry[1].items() if held[0] == company]
        return [self._convert({"id": cid, "properties": self._props(held)}) for cid, held in hits]

    # -- searches --------------------------------------------------------------------------
    def put(self, word: str, searched_at: float, objs: Iterable[Mapping[str, Any]]) -> None:
        """What a complete search for ``word`` that started at ``searched_at`` returned."""
        pending = self.collect([word], searched_at)
        pending.add(objs)
        pending.commit()

    def collect(self, words: Iterable[str], searched_at: float) -> Pending[R]:
        """Gather the answer to a search for ``words`` that starts now, page by page, and
        keep it once the search is known to be complete (:meth:`Pending.commit`).

        Only what fits in the memo's room is gathered: a search of many words matches
        thousands of contacts, and a lookup that held all of them decoded at once used to
        set the backfill's peak memory."""
        with self._lock:
            self._prune_recent()
            wanted = set(words) if self._ttl > 0 else set()
            for word in wanted:
                self._drop(word)  # about to be searched again
            horizon = self._clock() - self._ttl
            while self._words and next(iter(self._words.values()))[0] <= horizon:
                self._drop(next(iter(self._words)))  # expired: searched again when asked
            room = self._max - self._size
        return Pending(self, wanted, searched_at, room)

    def _remember(self, searched_at: float, found: dict[str, dict[str, _Held]]) -> None:
        with self._lock:
            self._prune_recent()
            for contact_id, (_, held) in self._recent.items():
                for word in held[0].split():
                    if word in found:
                        found[word].setdefault(contact_id, held)
            for word, contacts in found.items():
                self._drop(word)
                if self._size + len(contacts) > self._max:
                    # Full: keep what is held. A backfill asks for the same words in turn,
                    # and evicting to make room would only cycle them all out before their
                    # next use.
                    continue
                self._words[word] = (searched_at, contacts)
                self._size += len(contacts)

    # -- own writes ------------------------------------------------------------------------
    def note_written(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Contacts syncd just created or updated (objects as HubSpot answered the write)."""
        if self._ttl <= 0:
            return
        with self._lock:
            for obj in objs:
                contact_id = str(obj.get("id"))
                written = obj.get("properties")
                if not isinstance(written, Mapping):
                    continue
                props: Mapping[str, Any] = written
                for _, contacts in self._words.values():
                    old = contacts.get(contact_id)
                    if old is not None:  # an update may carry only the properties it set
                        props = {**self._props(old), **written}
                        contacts[contact_id] = self._hold(props)
                if not {"firstname", "lastname"} & props.keys():
                    continue  # not enough of a contact to match a name against
                new = self._hold(props)
                self._recent.pop(contact_id, None)
                self._recent[contact_id] = (self._clock(), new)
                for word in set(new[0].split()) & self._words.keys():
                    contacts = self._words[word][1]
                    if contact_id in contacts:
                        continue
                    if self._size >= self._max:
                        self._drop(word)  # no room to keep it complete: search it again
                    else:
                        contacts[contact_id] = new
                        self._size += 1
            self._prune_recent()

    def _prune_recent(self) -> None:
        horizon = self._clock() - self._ttl
        while self._recent and (
            next(iter(self._recent.values()))[0] < horizon or len(self._recent) > self._max
        ):
            self._recent.popitem(last=False)

    def _drop(self, word: str) -> None:
        entry = self._words.pop(word, None)
        if entry is not None:
            self._size -= len(entry[1])


class Pending(Generic[R]):
    """A search's answer for some words, gathered page by page (see
    :meth:`ColleagueMemo.collect`). Not shared between threads."""

    def __init__(
        self, memo: ColleagueMemo[R], words: set[str], searched_at: float, room: int
    ) -> None:
        self._memo = memo
        self._searched_at = searched_at
        self._room = room
        self._found: dict[str, dict[str, _Held]] = {word: {} for word in words}
        self._count = 0

    @property
    def held(self) -> int:
        """How many contacts are gathered (never more than the memo had room for)."""
        return self._count

    def add(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """One page of the search's results (any object, in any number of pages)."""
        for obj in objs:
            props = obj.get("properties")
            if not self._found:
                return
            if not isinstance(props, Mapping):
                continue
            contact_id = str(obj.get("id"))
            held: _Held | None = None
            for word in company_words(obj):
                contacts = self._found.get(word)
                if contacts is None or contact_id in contacts:
                    continue
                if self._count >= self._room and not self._make_room(word):
                    continue
                held = held or self._memo._hold(props)
                contacts[contact_id] = held
                self._count += 1

    def _make_room(self, word: str) -> bool:
        """Give up the words that have gathered most until one more fits (they would take
        most room: smaller answers are likelier to fit whole); True when ``word`` is still
        gathered."""
        while self._found and self._count >= self._room:
            largest = max(self._found, key=lambda w: len(self._found[w]))
            self._count -= len(self._found.pop(largest))
        return word in self._found

    def commit(self) -> None:
        """The search read every match: remember what was gathered."""
        self._memo._remember(self._searched_at, self._found)
        self._found = {}
