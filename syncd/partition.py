"""Split one claim into batches that can be delivered at the same time, safely.

Two batches of one target in flight together must never both create the same caller. Each
would look the caller up, find nobody (the other's contact is not written yet) and create it:
two contacts. So the batches of a round share no caller by construction: deliveries are
joined, transitively, when they share anything a match could link them by --

* an email, a phone (E.164) or the caller key of an in-doubt intent (the exact keys);
* the normalized company: the company-and-name rule matches people fuzzily within a company,
  and a connector may create the company record itself (a Salesforce Account), so every
  caller of one company goes to one batch;
* the CRM record a delivery is already tied to (a replay, an operator's choice, an intent):
  one record is written by one batch at a time.

Each joined group goes whole to the batch holding the fewest deliveries so far. Batches of
different rounds never overlap in time (a round ends when its last batch is recorded), so
the next round looks callers up after every contact of this one is written and cached.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence

from syncd.match.keys import CallerKeys
from syncd.store.store import Claimed

__all__ = ["link_keys", "partition"]


def link_keys(claimed: Claimed, keys: CallerKeys) -> list[str]:
    """What joins this delivery to others in the same batch (see the module docstring)."""
    out = [f"email:{e}" for e in keys.emails]
    out += [f"phone:{p.e164}" for p in keys.phones]
    if keys.company:
        out.append(f"company:{keys.company}")
    intent = claimed.intent or {}
    caller = str(intent.get("caller_key") or "")
    if caller:
        out.append(f"caller:{caller}")
    for record in (claimed.record_id, intent.get("record_id")):
        if record:
            out.append(f"record:{record}")
    return out


def partition(
    claimed: Sequence[Claimed],
    keys: Mapping[int, CallerKeys],
    batch_size: int,
    width: int,
) -> list[list[Claimed]]:
    """At most ``width`` batches of about ``batch_size`` deliveries (fewer for a small claim,
    so a run of one batch costs what it did), no two sharing a link key. Each batch keeps
    claim (id) order."""
    count = min(width, max(1, math.ceil(len(claimed) / max(batch_size, 1))))
    if count <= 1:
        return [list(claimed)] if claimed else []
    parent = list(range(len(claimed)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for index, item in enumerate(claimed):
        for key in link_keys(item, keys[item.delivery_id]):
            other = first.setdefault(key, index)
            if other != index:
                a, b = root(index), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for index in range(len(claimed)):
        groups.setdefault(root(index), []).append(index)
    # Largest groups first, each to the emptiest batch: sizes come out even.
    bins: list[tuple[int, int]] = [(0, b) for b in range(count)]
    members: list[list[int]] = [[] for _ in range(count)]
    for group in sorted(groups.values(), key=lambda g: (-len(g), g[0])):
        size, b = heapq.heappop(bins)
        members[b].extend(group)
        heapq.heappush(bins, (size + len(group), b))
    return [[claimed[i] for i in sorted(m)] for m in members if m]
