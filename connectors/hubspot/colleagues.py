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

A contact is held as its id, its non-empty properties and its normalized company, and turned
into a record only when a key asks for that company. Bounded by ``max_contacts`` remembered in
all (20,000 by default, about 10 MB) so memory stays bounded however long the backfill; a
full memo keeps the words it holds until they expire. Too small a memo is costly at scale: a
word's search returns every contact carrying it, 200 a page, so a word searched again in a
large portal costs several requests.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from syncd.match.names import normalize_company

__all__ = ["ColleagueMemo", "company_words"]

R = TypeVar("R")
# (id, the kept properties that are set, normalized company): no dict per contact beyond that
_Held = tuple[str, dict[str, Any], str]


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

    def _hold(self, obj: Mapping[str, Any]) -> _Held:
        # Only what a record is made of: not timestamps or the decoded answer's baggage.
        props = obj.get("properties")
        props = props if isinstance(props, Mapping) else {}
        kept = {k: v for k in self._keep if (v := props.get(k))}
        return str(obj.get("id")), kept, normalize_company(str(kept.get("company") or ""))

    def get(self, word: str, company: str) -> list[R] | None:
        """The contacts carrying ``word`` whose normalized company is ``company``, or None
        when the word must be searched (again)."""
        if self._ttl <= 0:
            return None
        with self._lock:
            held = self._words.get(word)
            if held is None:
                return None
            if self._clock() - held[0] >= self._ttl:
                self._drop(word)
                return None
            hits = [(cid, props) for cid, props, theirs in held[1].values() if theirs == company]
        return [self._convert({"id": cid, "properties": props}) for cid, props in hits]

    def put(self, word: str, searched_at: float, objs: Iterable[Mapping[str, Any]]) -> None:
        """What a complete search for ``word`` that started at ``searched_at`` returned."""
        if self._ttl <= 0:
            return
        contacts = {str(o.get("id")): self._hold(o) for o in objs if word in company_words(o)}
        with self._lock:
            self._prune_recent()
            for contact_id, (_, held) in self._recent.items():
                if contact_id not in contacts and word in held[2].split():
                    contacts[contact_id] = held
            self._drop(word)
            horizon = self._clock() - self._ttl
            while self._words and next(iter(self._words.values()))[0] <= horizon:
                self._drop(next(iter(self._words)))  # expired: searched again when asked
            if self._size + len(contacts) > self._max:
                # Full: keep what is held. A backfill asks for the same words in turn, and
                # evicting to make room would only cycle them all out before their next use.
                return
            self._words[word] = (searched_at, contacts)
            self._size += len(contacts)

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
                for _, contacts in self._words.values():
                    held = contacts.get(contact_id)
                    if held is not None:  # an update may carry only the properties it set
                        merged = {**held[1], **written}
                        contacts[contact_id] = self._hold({"id": contact_id, "properties": merged})
                if not {"firstname", "lastname"} & written.keys():
                    continue  # not enough of a contact to match a name against
                new = self._hold(obj)
                self._recent.pop(contact_id, None)
                self._recent[contact_id] = (self._clock(), new)
                for word in company_words(obj) & self._words.keys():
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
        held = self._words.pop(word, None)
        if held is not None:
            self._size -= len(held[1])
