"""Delivery: claim a batch of pending deliveries for one target, match, plan, apply, record.

Per batch, the CRM sees at most: one packed lookup for the keys the match cache could not
answer, one packed read for cached records whose fields we might fill, one batched contact
write, one batched activity write. Everything the batch learnt is recorded in one
transaction with the outcomes (see :meth:`syncd.store.Store.record`).

Nothing twice: before ``connector.apply`` each delivery is recorded, durably and under its
claim's fence, as *in doubt* together with its intent (action, record, caller key, fields).
Every later attempt at an in-doubt delivery -- after a crash, a signal, a hand-back, a daily
limit, a timeout, a malformed answer or a lost lease -- is sent as ``Plan(in_doubt=True)``,
rebuilt from that intent, so the connector finds each part by marker before writing; only a
recorded done clears the doubt. The claim is renewed between phases, and a
worker whose claim was taken over has its outcomes rejected as a whole by the store.
"""

from __future__ import annotations

import contextvars
import copy
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from syncd.alerts import dead_letter_alert
from syncd.backoff import backoff_delay
from syncd.config import DaemonSettings, TargetSettings
from syncd.connector import Connector, looks_up_in_turn, shares_instance
from syncd.errors import (
    AuthError,
    ClaimLost,
    PauseKind,
    RateLimited,
    RetriableError,
    TargetPaused,
)
from syncd.inflight import wait_for_all
from syncd.match.explain import describe
from syncd.match.keys import CallerKeys, extract_keys
from syncd.match.policy import (
    Decision,
    DecisionKind,
    canonical_fields,
    decide,
    name_key,
    plan_for,
    policy_keys,
)
from syncd.models import (
    Action,
    CrmRecord,
    KeyKind,
    MatchKey,
    Outcome,
    Plan,
)
from syncd.owners.assign import OwnerStep
from syncd.partition import partition
from syncd.store.alertbox import AlertRow
from syncd.store.breaker import close_breaker, open_until, record_failure
from syncd.store.records import Settled
from syncd.store.store import CacheEntry, CacheWrite, Claimed, DeliveryResult, State, Store

__all__ = ["DeliveryStats", "check_claim", "deliver_target"]

log = structlog.get_logger(__name__)


@dataclass
class DeliveryStats:
    claimed: int = 0
    done: int = 0
    contacts_created: int = 0
    contacts_updated: int = 0
    activities_logged: int = 0
    activities_updated: int = 0
    reconciled: int = 0
    review: int = 0
    skipped: int = 0
    retry: int = 0
    dead: int = 0
    batches: int = 0
    # In-doubt plans sent to the connector (each reconciles before it writes).
    in_doubt: int = 0
    # Outcomes the store rejected because this worker's claim had been taken over.
    rejected: int = 0
    dead_letters: list[tuple[str, str]] = field(default_factory=list)  # (message id, reason)
    # How each delivery was decided: email / phone / company_name / cache / operator (an
    # existing record found that way), new, review.
    matched: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return self.retry + self.dead

    def add(self, other: DeliveryStats) -> None:
        """Fold in the counts of a batch delivered alongside (each batch of a round keeps
        its own stats: a batch whose outcomes are rejected rolls back only its own)."""
        for name, value in vars(other).items():
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)
        self.dead_letters += other.dead_letters
        self.matched.update(other.matched)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "done": self.done,
            "contacts_created": self.contacts_created,
            "contacts_updated": self.contacts_updated,
            "activities_logged": self.activities_logged,
            "activities_updated": self.activities_updated,
            "reconciled": self.reconciled,
            "in_doubt": self.in_doubt,
            "rejected": self.rejected,
            "review": self.review,
            "skipped": self.skipped,
            "retry": self.retry,
            "dead": self.dead,
            "matched_by": dict(sorted(self.matched.items())),
        }


@dataclass
class _Item:
    claimed: Claimed
    keys: CallerKeys
    record: CrmRecord | None = None  # known from the cache (and maybe refreshed by a read)
    known: Mapping[str, str] = field(default_factory=dict)
    decision: Decision | None = None


def _snapshot_covers(offered: Mapping[str, str], snapshot: Mapping[str, str], policy: str) -> bool:
    """True when the cache already knows enough to skip reading the record from the CRM."""
    if policy == "fill_blanks":
        return all(snapshot.get(name) for name in offered)
    return all(snapshot.get(name) == value for name, value in offered.items())


class _Batch:
    def __init__(
        self,
        store: Store,
        connector: Connector,
        target: TargetSettings,
        daemon: DaemonSettings,
        regions: Mapping[str, str],
        now: datetime,
        dry_run: bool,
    ) -> None:
        self.store, self.connector, self.target, self.daemon = store, connector, target, daemon
        self.regions, self.now, self.dry_run = regions, now, dry_run
        self.results: list[DeliveryResult] = []
        self.alerts: list[AlertRow] = []
        self.cache_writes: list[CacheWrite] = []
        self.cache_drops: list[str] = []
        # Per delivery: canonical fields the CRM record holds once its plan succeeds.
        self.known_after: dict[int, dict[str, str]] = {}
        # Per delivery: the equally good records on_ambiguity="best" passed over.
        self.passed_over: dict[int, list[str]] = {}
        # Per delivery: how its match was decided, for the sync log (delivery_events).
        self.decisions: dict[int, str] = {}

    # -- steps -----------------------------------------------------------------------------
    def from_intent(self, items: list[_Item]) -> list[Plan]:
        """In-doubt deliveries with a recorded intent: the SAME plan again (same record, same
        caller key, same fields), marked in doubt -- never a fresh match, which could pick
        another record or caller key than the write that may have landed."""
        plans: list[Plan] = []
        for item in items:
            intent = item.claimed.intent or {}
            record_id = intent.get("record_id")
            kind = str(intent.get("record_kind") or "contact")
            if record_id:
                decision = Decision(DecisionKind.EXISTING, record=CrmRecord(str(record_id), kind))
            else:
                decision = Decision(DecisionKind.NEW, company_id=intent.get("company_id"))
            plan = plan_for(
                item.claimed.delivery_id,
                item.claimed.message,
                item.keys,
                decision,
                self.target,
                caller_key=str(intent.get("caller_key") or ""),
                existing_activity=item.claimed.activity_id,
            )
            if plan is None:  # the sync mode changed since: match afresh, still in doubt
                item.decision = None
                continue
            plan = replace(
                plan,
                action=Action(str(intent.get("action") or plan.action.value)),
                fields=dict(intent.get("fields") or {}),
                company_id=intent.get("company_id") or plan.company_id,
                record_kind=kind,
                in_doubt=True,
            )
            self.known_after[plan.delivery_id] = {}
            plans.append(plan)
        return plans

    def from_cache(self, items: list[_Item]) -> None:
        keys = {k for i in items for k in self._cache_keys(i.keys)}
        cached = self.store.cache_get(self.target.name, keys)
        to_read: dict[str, list[_Item]] = {}
        for item in items:
            claimed = item.claimed
            if claimed.settled is Settled.NEW:  # an operator said: this is someone new
                item.decision = Decision(DecisionKind.NEW, matched_by="operator")
                continue
            if claimed.record_id:
                # Delivered before (a replay or a changed message) or settled by an operator:
                # stay on that record if it still exists.
                item.record = CrmRecord(id=claimed.record_id, kind=claimed.record_kind or "contact")
                to_read.setdefault(item.record.kind, []).append(item)
                continue
            entry = self._first_hit(item.keys, cached)
            if entry is None:
                continue
            item.record = CrmRecord(id=entry.record_id, kind=entry.record_kind)
            item.known = entry.snapshot
            offered = self._offered(item)
            if self.target.sync_mode == "create_only" or _snapshot_covers(
                offered, entry.snapshot, self.target.field_policy
            ):
                item.decision = Decision(
                    DecisionKind.EXISTING, record=item.record, matched_by="cache"
                )
            else:
                to_read.setdefault(entry.record_kind, []).append(item)
        for kind, waiting in to_read.items():
            ids = sorted({i.record.id for i in waiting if i.record})
            fresh = self.connector.read(kind, ids)
            for item in waiting:
                assert item.record is not None
                record = fresh.get(item.record.id)
                if record is None:  # deleted or merged in the CRM since we cached it
                    self.cache_drops.append(item.record.id)
                    item.record, item.known = None, {}
                    continue
                item.record = record
                chosen = item.claimed.settled is Settled.RECORD  # an operator's choice
                item.decision = Decision(
                    DecisionKind.EXISTING,
                    record=record,
                    matched_by="operator" if chosen else "cache",
                )

    def from_crm(self, items: list[_Item]) -> None:
        pending = [i for i in items if i.decision is None]
        wanted = sorted({k for i in pending for k in policy_keys(i.keys, self.target.match)})
        candidates: Mapping[MatchKey, Sequence[CrmRecord]] = (
            self.connector.lookup(wanted) if wanted else {}
        )
        for item in pending:
            item.decision = decide(item.keys, candidates, self.target.match)

    def plan(
        self, items: list[_Item], stats: DeliveryStats, seed: Sequence[Plan] = ()
    ) -> list[Plan]:
        plans: list[Plan] = []
        group_of: dict[MatchKey, str] = {}  # one new caller in one batch -> one caller_key
        if any(i.decision is not None and i.decision.kind == DecisionKind.NEW for i in items):
            # A caller created by an attempt still in doubt (here, or in a batch that died)
            # keeps its caller key: search may not show that contact yet.
            doubtful = [(p.caller_key, p.message) for p in seed if p.caller_key]
            if not self.dry_run:
                doubtful += self.store.doubtful_creates(self.target.name)
            for caller, message in doubtful:
                region = self.regions.get(message.account, "US")
                for match_key in self._cache_keys(extract_keys(message, region)):
                    group_of.setdefault(match_key, caller)
        for item in items:
            decision = item.decision
            assert decision is not None
            claimed = item.claimed
            stats.matched[
                decision.matched_by if decision.kind == DecisionKind.EXISTING else decision.kind
            ] += 1
            self.decisions[claimed.delivery_id] = describe(decision, item.keys)
            if decision.kind == DecisionKind.REVIEW:
                stats.review += 1
                self.results.append(
                    DeliveryResult(
                        claimed.delivery_id,
                        State.REVIEW,
                        error=decision.reason,
                        review_candidates=list(decision.alternatives),
                        decision=self.decisions[claimed.delivery_id],
                    )
                )
                continue
            caller_key = ""
            if decision.kind == DecisionKind.NEW:
                keys = self._cache_keys(item.keys)
                caller_key = next(
                    (group_of[k] for k in keys if k in group_of), item.keys.caller_key
                )
                for key in keys:
                    group_of.setdefault(key, caller_key)
            plan = plan_for(
                claimed.delivery_id,
                claimed.message,
                item.keys,
                decision,
                self.target,
                caller_key=caller_key,
                existing_activity=claimed.activity_id,
                known=item.known,
            )
            if plan is not None and claimed.in_doubt:
                # A write may have landed (or an earlier store may have made it): reconcile.
                plan = replace(plan, in_doubt=True)
            if plan is None:
                stats.skipped += 1
                self.results.append(
                    DeliveryResult(
                        claimed.delivery_id,
                        State.SKIPPED,
                        error=f"{self.target.sync_mode}: no match",
                    )
                )
                continue
            if decision.kind == DecisionKind.EXISTING and decision.reason:
                self.passed_over[claimed.delivery_id] = list(decision.alternatives)
            known = dict(item.known)
            if decision.kind == DecisionKind.EXISTING and self.target.sync_mode != "create_only":
                # Each offered field is now filled: written, or skipped because it already was.
                known.update(self._offered(item))
            self.known_after[claimed.delivery_id] = known
            plans.append(plan)
        return plans

    def record_outcomes(
        self,
        plans: Sequence[Plan],
        outcomes: Sequence[Outcome],
        claims: Mapping[int, Claimed],
        stats: DeliveryStats,
    ) -> None:
        by_id = {p.delivery_id: p for p in plans}
        created: set[str] = set()
        for outcome in outcomes:
            plan = by_id.get(outcome.delivery_id)
            if plan is None:
                continue
            if outcome.gone:
                self.cache_drops.extend(outcome.gone)
            if outcome.ok:
                stats.done += 1
                if outcome.reconciled:
                    stats.reconciled += 1  # every part was already there: nothing written
                else:
                    if outcome.created and outcome.record_id:
                        created.add(outcome.record_id)
                    if outcome.updated:
                        stats.contacts_updated += 1
                    if plan.activity.existing_id:
                        stats.activities_updated += 1
                    else:
                        stats.activities_logged += 1
                self._done(
                    plan.delivery_id,
                    outcome.record_id,
                    outcome.record_kind,
                    outcome.activity_id,
                    "reconciled" if outcome.reconciled else plan.action.value,
                    passed_over=self.passed_over.get(plan.delivery_id),
                )
                if outcome.record_id:
                    # A LOG must not wipe what the cache knew: the next call would read again.
                    snapshot = {**self.known_after.get(plan.delivery_id, {}), **plan.fields}
                    self._cache_plan(plan, outcome.record_id, outcome.record_kind, snapshot)
                continue
            attempts = claims[plan.delivery_id].attempts
            # The record the intent named is gone: the next attempt matches afresh.
            forget = bool(plan.in_doubt and plan.record_id and plan.record_id in outcome.gone)
            if outcome.retriable and attempts < self.daemon.max_attempts:
                stats.retry += 1
                delay = 0.0 if outcome.gone else self._delay(attempts, outcome.retry_after)
                self.results.append(
                    DeliveryResult(
                        plan.delivery_id,
                        State.RETRY,
                        error=outcome.error,
                        next_attempt_at=self.now + timedelta(seconds=delay),
                        decision=self.decisions.get(plan.delivery_id),
                        forget_intent=forget,
                    )
                )
            else:
                stats.dead += 1
                error = outcome.error or "unknown error"
                stats.dead_letters.append((plan.message.message_id, error))
                log.warning(
                    "delivery dead",
                    target=self.target.name,
                    message_id=plan.message.message_id,
                    error=outcome.error,
                )
                self.results.append(
                    DeliveryResult(
                        plan.delivery_id,
                        State.DEAD,
                        error=outcome.error,
                        decision=self.decisions.get(plan.delivery_id),
                        forget_intent=forget,
                    )
                )
                self.alerts.append(
                    dead_letter_alert(
                        self.target.name, plan.message.account, plan.message.message_id, error,
                        self.now,
                    )
                )  # fmt: skip
        stats.contacts_created += len(created)

    # -- helpers ---------------------------------------------------------------------------
    def _offered(self, item: _Item) -> dict[str, str]:
        return canonical_fields(item.claimed.message, item.keys)

    def _cache_keys(self, keys: CallerKeys) -> list[MatchKey]:
        out = [MatchKey(KeyKind.EMAIL, e) for e in keys.emails]
        out += [MatchKey(KeyKind.PHONE, p.e164) for p in keys.phones]
        nk = name_key(keys)
        if nk is not None and "company_name" in self.target.match.keys:
            out.append(nk)
        return out

    def _first_hit(
        self, keys: CallerKeys, cached: Mapping[MatchKey, CacheEntry]
    ) -> CacheEntry | None:
        for name in self.target.match.keys:
            if name == "email":
                probe = [MatchKey(KeyKind.EMAIL, e) for e in keys.emails]
            elif name == "phone":
                probe = [MatchKey(KeyKind.PHONE, p.e164) for p in keys.phones]
            else:
                nk = name_key(keys)
                probe = [nk] if nk else []
            for key in probe:
                if key in cached:
                    return cached[key]
        return None

    def _cache(
        self, keys: CallerKeys, record_id: str, kind: str, snapshot: Mapping[str, str]
    ) -> None:
        for key in self._cache_keys(keys):
            self.cache_writes.append(CacheWrite(key, record_id, kind, snapshot))

    def _cache_plan(
        self, plan: Plan, record_id: str, kind: str, snapshot: Mapping[str, str]
    ) -> None:
        for key in plan.keys:
            if key.kind is KeyKind.NAME and "company_name" not in self.target.match.keys:
                continue
            self.cache_writes.append(CacheWrite(key, record_id, kind, snapshot))

    def _done(
        self,
        delivery_id: int,
        record_id: str | None,
        kind: str | None,
        activity_id: str | None,
        action: str,
        *,
        passed_over: list[str] | None = None,
    ) -> None:
        self.results.append(
            DeliveryResult(
                delivery_id,
                State.DONE,
                record_id=record_id,
                record_kind=kind,
                activity_id=activity_id,
                action=action,
                review_candidates=passed_over,
                decision=self.decisions.get(delivery_id, action),
            )
        )

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        return backoff_delay(
            attempts,
            base=self.daemon.retry_base_seconds,
            cap=self.daemon.retry_cap_seconds,
            retry_after=retry_after,
        )


def deliver_target(
    store: Store,
    connector: Connector,
    target: TargetSettings,
    daemon: DaemonSettings,
    *,
    regions: Mapping[str, str],
    stop: threading.Event | None = None,
    dry_run: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    max_batches: int | None = None,
    on_batch: Callable[[str, DeliveryStats], None] | None = None,
    stats: DeliveryStats | None = None,
    pool: Sequence[Connector] = (),
) -> DeliveryStats:
    """Deliver everything due for ``target``. Raises AuthError (target must pause) after
    giving its claims back; a spent daily quota raises :class:`TargetPaused`. Counts go to
    ``stats`` when given, so a caller still has them when a batch fails and this raises.

    Up to ``target.concurrency`` batches are in flight at once (see :func:`_rounds`), each
    on a connector of its own from ``connector`` + ``pool``, or all on ``connector`` when it
    says it is ``thread_safe``; otherwise one batch at a time."""
    stats = stats if stats is not None else DeliveryStats()
    held: list[tuple[int, str]] = []  # dry run keeps its claims to the end: each seen once
    worker = daemon.worker_id
    breaker = open_until(store, target.name)
    if breaker.is_open(clock()) and breaker.open_until is not None:
        raise TargetPaused(
            target.name,
            breaker.open_until,
            f"circuit open: {breaker.reason}",
            kind=PauseKind.OUTAGE,
        )
    failing = [breaker.failures > 0]  # the breaker has failures to clear on a success
    creating = _NewCallerLease(store, target.name, worker, daemon.lease_seconds, clock, stop)
    connectors = _workers(connector, pool, target.concurrency)
    if len(connectors) > 1 and not dry_run:
        _rounds(
            store, connectors, target, daemon, regions, stats, creating, failing, clock, stop,
            max_batches, on_batch,
        )  # fmt: skip
        return stats
    try:
        while not (stop and stop.is_set()):
            if max_batches is not None and stats.batches >= max_batches:
                break
            now = clock()
            claimed = store.claim(
                target.name, daemon.batch_size, worker, daemon.lease_seconds, now,
                doubt_before_birth=daemon.reconcile_before_birth,
            )  # fmt: skip
            if not claimed:
                break
            stats.batches += 1
            stats.claimed += len(claimed)
            if dry_run:
                held.extend((c.delivery_id, c.token) for c in claimed)
            try:
                _deliver_batch(
                    store, connector, target, daemon, regions, claimed, stats, now, dry_run,
                    creating, failing, clock,
                )  # fmt: skip
            finally:
                creating.release()
            if on_batch is not None:
                on_batch(target.name, stats)
    finally:
        for token in {t for _, t in held}:
            ids = [i for i, t in held if t == token]
            store.release(ids, worker=worker, refund_attempt=True, token=token)
    return stats


def _keys_of(claimed: Claimed, regions: Mapping[str, str]) -> CallerKeys:
    return extract_keys(claimed.message, regions.get(claimed.message.account, "US"))


def _workers(connector: Connector, pool: Sequence[Connector], concurrency: int) -> list[Connector]:
    """One connector per batch in flight. A connector that is not ``thread_safe`` is never
    shared between threads: without enough instances in ``pool`` the target goes one batch
    at a time."""
    if concurrency <= 1:
        return [connector]
    if shares_instance(connector):
        return [connector] * concurrency
    return [connector, *pool][:concurrency]


def _rounds(
    store: Store,
    connectors: Sequence[Connector],
    target: TargetSettings,
    daemon: DaemonSettings,
    regions: Mapping[str, str],
    stats: DeliveryStats,
    creating: _NewCallerLease,
    failing: list[bool],
    clock: Callable[[], datetime],
    stop: threading.Event | None,
    max_batches: int | None,
    on_batch: Callable[[str, DeliveryStats], None] | None,
) -> None:
    """Deliver in rounds: claim up to ``len(connectors)`` batches' worth under one claim
    token, split it into batches that share no caller (:func:`syncd.partition.partition`),
    deliver those at once (one thread and one connector each, every request under the
    connector's shared rate limiter), and claim again only when every batch of the round is
    recorded: the next round's lookups and cache reads see every contact this one created.

    The batches take turns to read the owner list (it is listed once, not once a batch),
    and -- where the connector says ``lookups_in_turn`` (HubSpot: its searches are paced at a
    few a second anyway, and each lookup reuses the company words the one before searched)
    -- to look up; they write at the same time. Each batch is an ordinary
    :func:`_deliver_batch`: its own fence checks, in-doubt marks, heartbeat and record. The
    first failure of a round is raised once all its batches ended (each gave back or
    recorded its deliveries by then)."""
    width = len(connectors)
    looking = threading.Lock()
    stop = stop or threading.Event()
    with ThreadPoolExecutor(width, thread_name_prefix=f"deliver:{target.name}") as threads:
        while not stop.is_set():
            if max_batches is not None and stats.batches >= max_batches:
                break
            now = clock()
            claimed = store.claim(
                target.name, daemon.batch_size * width, daemon.worker_id, daemon.lease_seconds,
                now, doubt_before_birth=daemon.reconcile_before_birth,
            )  # fmt: skip
            if not claimed:
                break
            keys = {c.delivery_id: _keys_of(c, regions) for c in claimed}
            batches = partition(claimed, keys, daemon.batch_size, width)
            stats.claimed += len(claimed)
            stats.batches += len(batches)
            parts = [DeliveryStats() for _ in batches]

            futures = [
                threads.submit(
                    contextvars.copy_context().run,  # log lines keep the cycle's run id
                    _batch_in_round,
                    store,
                    connectors[i],
                    target,
                    daemon,
                    regions,
                    batch,
                    parts[i],
                    now,
                    creating,
                    failing,
                    clock,
                    keys,
                    looking,
                )
                for i, batch in enumerate(batches)
            ]
            wait_for_all(futures, stop)  # ^C: the round's batches still record
            errors = [f.exception() for f in futures]
            for part in parts:
                stats.add(part)
            if on_batch is not None:
                on_batch(target.name, stats)
            failed = [e for e in errors if e is not None]
            if failed:
                # Credentials first (the target must pause), then a pause, then the rest.
                failed.sort(
                    key=lambda e: (
                        0 if isinstance(e, AuthError) else 1 if isinstance(e, TargetPaused) else 2
                    )
                )
                raise failed[0]


def _batch_in_round(
    store: Store,
    connector: Connector,
    target: TargetSettings,
    daemon: DaemonSettings,
    regions: Mapping[str, str],
    claimed: list[Claimed],
    stats: DeliveryStats,
    now: datetime,
    creating: _NewCallerLease,
    failing: list[bool],
    clock: Callable[[], datetime],
    keys: Mapping[int, CallerKeys],
    looking: threading.Lock,
) -> None:
    try:
        _deliver_batch(
            store, connector, target, daemon, regions, claimed, stats, now, False, creating,
            failing, clock, keys, looking,
        )  # fmt: skip
    finally:
        creating.release()


def _deliver_batch(
    store: Store,
    connector: Connector,
    target: TargetSettings,
    daemon: DaemonSettings,
    regions: Mapping[str, str],
    claimed: list[Claimed],
    stats: DeliveryStats,
    now: datetime,
    dry_run: bool,
    creating: _NewCallerLease | None = None,
    failing: list[bool] | None = None,
    clock: Callable[[], datetime] | None = None,
    keys: Mapping[int, CallerKeys] | None = None,
    looking: threading.Lock | None = None,
) -> None:
    # Renewals run from the current time, not the batch's start (on SQLite the process clock
    # is the lease clock): a batch that waited keeps a full lease ahead of it.
    current = clock or (lambda: now)
    batch = _Batch(store, connector, target, daemon, regions, now, dry_run)
    claims = {c.delivery_id: c for c in claimed}
    token = claimed[0].token
    ids = list(claims)
    lease = daemon.lease_seconds
    try:
        items = [_Item(c, keys[c.delivery_id] if keys else _keys_of(c, regions)) for c in claimed]
        intended = [i for i in items if i.claimed.in_doubt and i.claimed.intent]
        again = batch.from_intent(intended)
        rebuilt = {p.delivery_id for p in again}
        items = [i for i in items if i.claimed.delivery_id not in rebuilt]
        # Lookups in turn where the connector asks for it (it memoizes what a lookup learnt).
        turn = looking if looks_up_in_turn(connector) else None
        with turn or nullcontext():
            batch.from_cache(items)
            batch.from_crm(items)
        name = target.name
        ids = _still_held(store, name, ids, token, lease, current(), "after lookup")
        if creating is not None and not dry_run and _has_new(items):
            creating.acquire()
            # Waiting for the new-caller lease must not cost the delivery lease.
            ids = _still_held(
                store, name, ids, token, lease, current(), "after the new-caller lease"
            )
            _recheck_new(batch, items)
        kept = set(ids)
        items = [i for i in items if i.claimed.delivery_id in kept]
        plans = [p for p in again if p.delivery_id in kept] + batch.plan(items, stats, again)
        owners = OwnerStep(store, connector, target.name, target.owners, dry_run=dry_run)
        with looking or nullcontext():  # the owner list is read once, not once a batch
            plans = owners.assign(
                plans,
                {i.claimed.delivery_id: i.decision.record if i.decision else None for i in items},
            )
        if plans and not dry_run:
            # Durably "may have been written" BEFORE the first byte goes to the CRM.
            marked = store.mark_in_doubt(
                {p.delivery_id: _intent(p) for p in plans}, token=token, lease_seconds=lease,
                now=current(),
            )  # fmt: skip
            lost = {p.delivery_id for p in plans} - marked
            if lost:  # taken over: the new holder reconciles them, we must not write them
                _lost(target.name, len(lost), "before apply")
                kept -= lost
                plans = [p for p in plans if p.delivery_id in marked]
        stats.in_doubt += sum(1 for p in plans if p.in_doubt)
        if plans and not dry_run:
            # A CRM slower than the lease must not cost the claim while we wait for it.
            beat = _Heartbeat(store, name, [p.delivery_id for p in plans], token, lease, current)
            try:
                with beat:
                    outcomes = owners.checked(connector.apply(plans))
            except ClaimLost:
                # Taken over mid-apply: the new holder reconciles every part. Ours that are
                # still held go back (in doubt) for a prompt retry instead of a lease wait.
                _lost(name, len(plans), "mid-apply: the connector was stopped")
                store.release(beat.ids, worker=daemon.worker_id, token=token)
                stats.rejected += len(plans)
                return
        else:
            outcomes = owners.checked(connector.apply(plans) if plans else [])
        if plans and not dry_run:
            _still_held(store, name, ids, token, lease, current(), "after apply")
        answered = {o.delivery_id for o in outcomes}
        missing = [p for p in plans if p.delivery_id not in answered]
        outcomes = list(outcomes) + [
            Outcome(p.delivery_id, ok=False, error="connector gave no outcome", retriable=True)
            for p in missing
        ]
        counted = copy.deepcopy(stats)  # as it was, should the store reject these outcomes
        batch.record_outcomes(plans, outcomes, claims, stats)
    except AuthError as exc:
        store.release(
            ids, worker=daemon.worker_id, error=str(exc), refund_attempt=True, token=token
        )
        raise
    except RateLimited as exc:
        if exc.daily:
            until = now + timedelta(seconds=daemon.daily_limit_pause_seconds)
            store.release(
                ids,
                worker=daemon.worker_id,
                next_attempt_at=until,
                error=str(exc),
                refund_attempt=True,
                token=token,
            )
            raise TargetPaused(target.name, until, "daily API limit reached") from exc
        _retry_all(store, target.name, ids, daemon, now, exc.retry_after, str(exc), claims, stats)
        raise
    except RetriableError as exc:
        if not dry_run:
            state = record_failure(
                store, target.name, str(exc), threshold=daemon.breaker_failures,
                pause_seconds=daemon.breaker_pause_seconds,
                max_pause_seconds=daemon.breaker_max_pause_seconds, now=now,
            )  # fmt: skip
            if failing is not None:
                failing[0] = True
            if state.open_until is not None:
                # An outage: hand the batch back without spending its attempts, pause.
                store.release(
                    ids, worker=daemon.worker_id, next_attempt_at=state.open_until,
                    error=str(exc), refund_attempt=True, token=token,
                )  # fmt: skip
                stats.retry += len(ids)
                reason = f"circuit open after {state.failures} failed batches: {exc}"
                raise TargetPaused(
                    target.name, state.open_until, reason, kind=PauseKind.OUTAGE
                ) from exc
        _retry_all(store, target.name, ids, daemon, now, exc.retry_after, str(exc), claims, stats)
        raise
    except BaseException as exc:
        # A bug or an interrupt: give the work back for the next run (still in doubt when
        # it was marked so: the next attempt reconciles).
        store.release(
            ids,
            worker=daemon.worker_id,
            error=f"{type(exc).__name__}: {exc}",
            refund_attempt=True,
            token=token,
        )
        raise
    if failing is not None and failing[0] and not dry_run:
        close_breaker(store, target.name)  # the CRM answered: the outage is over
        failing[0] = False
    if not dry_run:
        results = [r for r in batch.results if r.delivery_id in kept]
        if not store.record(
            target.name,
            results,
            worker=daemon.worker_id,
            cache_writes=batch.cache_writes,
            cache_drops=batch.cache_drops,
            now=now,
            token=token,
            alerts=batch.alerts,
        ):
            _lost(target.name, len(results), "at record: outcomes rejected")
            # Another worker owns these deliveries now and counts what it records.
            for name in vars(stats):
                setattr(stats, name, getattr(counted, name))
            stats.rejected += len(results)
        else:
            owners.record(plans, outcomes, now)


# A claim is renewed this often (a fraction of the lease) while the connector writes.
HEARTBEAT_SHARE = 1 / 3


_applying = threading.local()  # .beat: the heartbeat of the batch this thread applies


def check_claim() -> None:
    """Called after every CRM answer (the daemon's request observer): raises
    :class:`ClaimLost` into the connector once the batch it applies belongs to another worker,
    so a worker that was frozen past its lease does not send the rest of its writes. Costs
    a database read only when no renewal has succeeded for most of a lease."""
    beat: _Heartbeat | None = getattr(_applying, "beat", None)
    if beat is not None and beat.lost_now():
        raise ClaimLost(f"claims on {beat.target} were taken over by another worker")


class _Heartbeat:
    """Renews a batch's claim in the background while ``connector.apply`` runs, so only a
    worker that is gone or frozen (or cut off from the database) for a whole lease loses its
    claim; one that is merely waiting on a slow CRM keeps it."""

    def __init__(
        self,
        store: Store,
        target: str,
        ids: list[int],
        token: str,
        lease: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.store, self.target, self.ids, self.token = store, target, ids, token
        self.lease, self.clock = lease, clock
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"lease:{target}", daemon=True)
        self.renewed = time.monotonic()
        self.lost = False

    def __enter__(self) -> _Heartbeat:
        self.renewed = time.monotonic()
        _applying.beat = self
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        _applying.beat = None
        self.stop.set()
        self.thread.join()

    def lost_now(self) -> bool:
        """True once any claim of the batch is known to be another worker's. Asks the
        database when the last renewal is most of a lease old (we may have been frozen)."""
        if not self.lost and time.monotonic() - self.renewed > self.lease * 0.8:
            self._renew()
        return self.lost

    def _renew(self) -> None:
        held = self.store.renew(
            self.ids, token=self.token, lease_seconds=self.lease, now=self.clock()
        )
        if len(held) < len(self.ids):
            _lost(self.target, len(self.ids) - len(held), "while the CRM answered")
            self.ids = [i for i in self.ids if i in held]
            self.lost = True
        else:
            self.renewed = time.monotonic()

    def _beat(self) -> None:
        every = max(self.lease * HEARTBEAT_SHARE, 0.05)
        while not self.stop.wait(every) and not self.lost:
            try:
                self._renew()
            except Exception as exc:  # the database is away: the record fence decides later
                log.warning("claim not renewed", target=self.target, error=type(exc).__name__)


def _intent(plan: Plan) -> dict[str, Any]:
    """What a plan set out to do, enough to send the same plan again."""
    return {
        "action": plan.action.value,
        "record_id": plan.record_id,
        "record_kind": plan.record_kind,
        "caller_key": plan.caller_key,
        "fields": dict(plan.fields),
        "company_id": plan.company_id,
    }


def _lost(target: str, count: int, when: str) -> None:
    log.warning(
        "stale worker: claims taken over by another worker",
        target=target,
        deliveries=count,
        when=when,
    )


def _still_held(
    store: Store, target: str, ids: list[int], token: str, lease: float, now: datetime, when: str
) -> list[int]:
    """Renew the claim; the deliveries another worker took over are dropped from this
    batch (never written, never recorded, never released by us)."""
    if not ids:
        return ids
    held = store.renew(ids, token=token, lease_seconds=lease, now=now)
    if len(held) < len(ids):
        _lost(target, len(ids) - len(held), when)
    return [i for i in ids if i in held]


class _NewCallerLease:
    """Replicas create new callers on a target one batch at a time.

    Two replicas can each hold a message from the same new caller, spelt differently (one
    with an email, one with only the phone): each looks the caller up, finds nobody, and
    creates them under a different caller key -- two contacts. A batch that would create
    holds this lease until its outcomes, match cache included, are recorded; the next holder
    asks the cache again first. Alone, a replica takes it at once.
    """

    def __init__(
        self,
        store: Store,
        target: str,
        worker: str,
        ttl: float,
        clock: Callable[[], datetime],
        stop: threading.Event | None,
    ) -> None:
        self.store, self.name, self.worker, self.ttl = store, f"new:{target}", worker, ttl
        self.clock, self.stop = clock, stop or threading.Event()
        # The batches of one round (syncd.partition: they share no caller) hold the lease
        # together: it is taken (or renewed) by each and given back by the last.
        self._mutex = threading.Lock()
        self._holders = 0
        self._mine = threading.local()

    @property
    def held(self) -> bool:
        return bool(getattr(self._mine, "held", False))

    def acquire(self) -> None:
        while True:
            with self._mutex:
                if self.store.acquire_lease(self.name, self.worker, self.ttl, self.clock()):
                    self._holders += 1
                    self._mine.held = True
                    return
            if self.stop.wait(0.05):
                return  # shutting down: finish this batch rather than wait

    def release(self) -> None:
        if not self.held:
            return
        self._mine.held = False
        with self._mutex:
            self._holders -= 1
            if self._holders == 0:
                self.store.release_lease(self.name, self.worker)


def _has_new(items: Sequence[_Item]) -> bool:
    return any(i.decision is not None and i.decision.kind == DecisionKind.NEW for i in items)


def _recheck_new(batch: _Batch, items: Sequence[_Item]) -> None:
    """Callers looked up as new may have been created by another replica meanwhile: its
    match cache is recorded by now, so ask the cache again (no CRM request unless a hit
    needs reading)."""
    new = [i for i in items if i.decision is not None and i.decision.kind == DecisionKind.NEW]
    decided = [i.decision for i in new]
    for item in new:
        item.decision = None
    batch.from_cache(new)
    for item, decision in zip(new, decided, strict=True):
        if item.decision is None:
            item.decision = decision


def _retry_all(
    store: Store,
    target: str,
    ids: list[int],
    daemon: DaemonSettings,
    now: datetime,
    retry_after: float | None,
    error: str,
    claims: Mapping[int, Claimed],
    stats: DeliveryStats,
) -> None:
    """The whole batch failed: retry each delivery after a back-off, unless it has had its
    ``max_attempts`` -- then it is dead, as after per-record failures, for an operator to see
    and requeue (``syncd retry``) instead of being retried unseen for ever."""
    token = next(iter(claims.values())).token if claims else None
    spent = [i for i in ids if claims[i].attempts >= daemon.max_attempts]
    ids = [i for i in ids if claims[i].attempts < daemon.max_attempts]
    if spent:
        dead = [DeliveryResult(i, State.DEAD, error=error[:2000]) for i in spent]
        alerts = [
            dead_letter_alert(
                target, claims[i].message.account, claims[i].message.message_id, error, now
            )
            for i in spent
        ]
        if store.record(target, dead, worker=daemon.worker_id, now=now, token=token, alerts=alerts):
            stats.dead += len(spent)
            stats.dead_letters += [(claims[i].message.message_id, error) for i in spent]
            log.warning("deliveries dead", target=target, count=len(spent), error=error)
    stats.retry += len(ids)
    if not ids:
        return
    attempts = max(claims[i].attempts for i in ids)
    delay = backoff_delay(
        attempts,
        base=daemon.retry_base_seconds,
        cap=daemon.retry_cap_seconds,
        retry_after=retry_after,
    )
    store.release(
        ids,
        worker=daemon.worker_id,
        next_attempt_at=now + timedelta(seconds=delay),
        error=error,
        token=token,
    )
