"""PartitionEngine: applies the entries of one ledger partition, in position order, to the state in a store.

Per entry (docs/RULES.md, "Order of processing of one ledger entry"):
1. stateless validation, then the future bound (event time more than `max_event_time_skew_ms` after the record's
   ingest time); a refused entry gives a Rejection (and a command its REJECTED decision) and changes nothing, not
   even the clock;
2. a fresh PolicyChange (position above the partition's last) is accepted into the policy history, or refused
   without moving the clock;
3. if the position is fresh for the partition: the clock becomes max(clock, event_time) and reservations whose
   expiry has been reached expire (EXPIRED decisions), in (expires_at, sku, reservation_id) order;
4. the entry itself: a policy re-evaluates every SKU in sorted order; a movement or command is applied to its SKU
   unless the SKU already applied that ledger position (redelivery), that source position (a repeat the ingest
   stage re-sent: exact, no window) or, within the duplicate window, that event id (a source system's duplicate).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

from app.engine import reasons
from app.engine.availability import Cause, publish_all, publish_changes, rebuild_derived
from app.engine.events import (
    ClockTick,
    Event,
    FallbackKind,
    FeedActivity,
    PolicyChange,
    ReservationCommand,
    StockMovement,
    validate,
)
from app.engine.limits import DEFAULT_LIMITS, EngineLimits
from app.engine.movements import NO_PROBLEMS, apply_movement
from app.engine.outputs import ExceptionKind, InventoryException, Output, Rejection
from app.engine.policy import Policy, degraded_locations
from app.engine.positions import NO_ORIGIN, EntryOrigin, split_position
from app.engine.reservations import answerable, apply_command, expire, refuse_malformed
from app.engine.state import FinishedReservation, PartitionState, SkuState
from app.engine.store import MemoryStore, StateStore

FORGET_STEP_MS = 60_000
"""How far the clock moves between two calls that let the store forget expired records (storage only: the engine
checks each record's time itself)."""
FEEDS_ENTRY = "FEEDS"  # SkuState.history kind of a clock tick that changed which fallbacks apply to the SKU
APPLIED = "APPLIED"  # SkuState.history result of an entry that was applied (commands record their outcome)
POLICY_ENTRY = "POLICY"  # SkuState.history kind of a policy change re-evaluating the SKU


def tick_event_id(partition: int, position: int) -> str:
    """The id EXPIRED decisions carry when a clock tick (which has no id of its own) caused them: its ledger
    offset (a tick is a record of its own), with the index inside the record if it is not the first."""
    offset, index = split_position(position)
    return f"tick-{partition}-{offset}" if index == 0 else f"tick-{partition}-{offset}.{index}"


class PartitionEngine:
    """The availability rules for one ledger partition. Deterministic: the same entries from the same state give
    the same outputs and the same state. Never raises on input; a store that raises propagates its error."""

    def __init__(self, partition: int, store: StateStore, channels_with_topics: frozenset[str],
                 compiled_policies: dict[int, Policy] | None = None, limits: EngineLimits = DEFAULT_LIMITS) -> None:
        """`compiled_policies`: effective offset -> compiled Policy, kept by a caller that makes an engine per
        micro-batch, so a policy is compiled once and not per batch. Compiled policies are immutable, and each use
        checks that the history still holds the same change at that offset."""
        self.partition = partition
        self.store = store
        self.channels_with_topics = frozenset(channels_with_topics)
        self.limits = limits
        self.state: PartitionState = store.get_partition_state() or PartitionState(partition)
        self._compiled: dict[int, Policy] = {} if compiled_policies is None else compiled_policies
        self._latest: Policy | None = None  # the compiled latest policy, checked against the history on each use
        self._position = -1  # the entry being applied
        self._finished_now: set[tuple[str, str]] = set()  # (sku, reservation id) finished by that entry
        self._finished = _FinishedView(self)
        self._forgotten_clock = -1  # the clock at the last forget_before()
        self._variant: tuple[tuple, Policy] | None = None  # the latest policy under the current silent feeds
        self._record: dict | None = None  # the availability changes of the open ledger record (begin_record)

    # ------------------------------------------------------------------------------------------------ policies

    def policy_at(self, position: int) -> Policy | None:
        """The compiled policy in force for an entry at `position`."""
        policies = self.state.policies
        if policies:  # the common case: the latest policy, already compiled
            effective_position, change = policies[-1]
            latest = self._latest
            if (
                position >= effective_position
                and latest is not None
                and latest.change is change
                and latest.effective_position == effective_position
            ):
                return latest
            if position >= effective_position:
                latest = self._compiled.get(effective_position)
                if latest is not None and latest.change is change:
                    self._latest = latest = self._with_fallbacks(latest)
                    return latest
        found = self.state.policy_change_at(position)
        if found is None:
            return None
        effective_position, change = found
        policy = self._compiled.get(effective_position)
        if policy is None or policy.change is not change and policy.change != change:
            policy = self._compiled[effective_position] = Policy(change, effective_position)
            if len(self._compiled) > 2 * len(self.state.policies) + 4:
                live = {offset for offset, _ in self.state.policies}
                for key in [key for key in self._compiled if key not in live]:
                    del self._compiled[key]  # in place: the dict may be the caller's cache
        return self._with_fallbacks(policy)

    def _with_fallbacks(self, policy: Policy) -> Policy:
        """`policy` under the fallbacks of the feeds the partition holds silent (itself when none applies)."""
        silent = self.state.silent
        if not silent or not policy.change.feeds:
            return policy
        key = (policy.effective_position, tuple(sorted(silent)))
        variant = self._variant
        if variant is None or variant[0] != key or variant[1].change is not policy.change:
            degraded = degraded_locations(policy, silent)
            variant = self._variant = (key, Policy(policy.change, policy.effective_position, degraded)
                                       if degraded else policy)
        return variant[1]

    @staticmethod
    def _use_policy(state: SkuState, policy: Policy | None) -> None:
        if state.policy is not policy:
            if policy is None:
                state.policy = None
            else:
                rebuild_derived(state, policy)

    # ------------------------------------------------------------------------------------------------- records

    def begin_record(self) -> None:
        """Open a ledger record: until `end_record`, `apply` returns no ChannelAvailability; each key the record's
        entries change is published once, by `end_record`, with its last value and the lineage of its last change
        (its version grows by 1 per published record: docs/CONTRACT.md, "Ordering guarantee"). Deterministic, since
        a ledger record never changes once written, so a replay publishes the same records."""
        self._record = {}

    def end_record(self) -> list[Output]:
        """The open record's availability changes, one per key, in the ledger order of each key's last change."""
        record, self._record = self._record, None
        return list(record.values()) if record else []

    # ------------------------------------------------------------------------------------------------- entries

    def apply(self, event: Event, position: int, origin: EntryOrigin = NO_ORIGIN) -> list[Output]:
        """Apply the ledger entry at `position`; returns what to publish, in order. `origin` is what its ledger
        record says of where it came from (app.engine.positions.EntryOrigin)."""
        out: list[Output] = []
        reason = validate(event)
        if reason is None:
            ingest_time = origin.ingest_time
            if ingest_time is not None and event.event_time > ingest_time + self.limits.max_event_time_skew_ms:
                reason = reasons.EVENT_TIME_IN_FUTURE
        if reason is not None:
            self._refuse(event, reason, position, out)
            return out
        partition = self.state
        fresh = position > partition.last_position
        kind = type(event)
        self._position = position
        if self._finished_now:
            self._finished_now.clear()
        if kind is FeedActivity:
            if fresh:
                self._note_activity(event)
                partition.last_position = position  # a feed's activity moves no clock
        elif fresh and kind is PolicyChange and not self._accept_policy(event, position, out):
            partition.last_position = position  # refused: on the ledger, but it moves no clock
        else:
            if fresh:
                self._advance(event, position, out)
                if partition.clock - self._forgotten_clock >= FORGET_STEP_MS:
                    self._forget_old_records()
            if kind is StockMovement or kind is ReservationCommand:
                self._apply_to_sku(event, position, origin, out)
            elif kind is PolicyChange:
                self._reevaluate_all(event, position, out)
            elif fresh and kind is ClockTick and (partition.feeds_seen or partition.silent):
                self._check_feeds(position, out)
        self.store.put_partition_state(partition)
        return out

    # -------------------------------------------------------------------------------------- feeds (section 12)

    def _note_activity(self, activity: FeedActivity) -> None:
        seen = self.state.feeds_seen
        feed = activity.feed.value
        for item in activity.seen:
            key = (feed, item.location)
            if item.last_event_time > seen.get(key, -1):
                seen[key] = item.last_event_time

    def _check_feeds(self, position: int, out: list) -> None:
        """At a clock tick: which feeds are silent past their rule now; on any change, the fallbacks follow and
        every SKU with stock at a location concerned is evaluated again at this position."""
        partition = self.state
        base = self.policy_at(position)
        rules = {rule.feed.value: rule for rule in base.change.feeds} if base is not None else {}
        clock = partition.clock
        now_silent: dict[tuple[str, str], int] = {}
        for (feed, location), seen in partition.feeds_seen.items():
            rule = rules.get(feed)
            if rule is None or clock - seen <= rule.max_silence_seconds * 1000:
                continue
            if rule.location_types and base.location_types.get(location) not in rule.location_types:
                continue
            previous = partition.silent.get((feed, location))
            now_silent[(feed, location)] = seen if previous is None else previous
        if now_silent.keys() == partition.silent.keys():
            return
        event_id = tick_event_id(self.partition, position)
        changed = set()
        for key in sorted(now_silent.keys() - partition.silent.keys()):
            feed, location = key
            rule = rules[feed]
            changed.add(location)
            out.append(InventoryException(
                ExceptionKind.STALE_FEED, None, location, None, clock - now_silent[key], None, event_id,
                self.partition, position, clock,
                f"{feed} silent for {(clock - now_silent[key]) // 1000} s (rule: {rule.max_silence_seconds} s): "
                f"{rule.fallback.value}{'' if rule.fallback is FallbackKind.EXCLUDE_FROM_NETWORK else f' {rule.amount}'}"
                " applies until it speaks again",
            ))
        for key in sorted(partition.silent.keys() - now_silent.keys()):
            feed, location = key
            changed.add(location)
            gap = partition.feeds_seen.get(key, clock) - partition.silent[key]
            out.append(InventoryException(
                ExceptionKind.FEED_RECOVERED, None, location, None, gap, None, event_id, self.partition, position,
                clock, f"{feed} spoke again after {gap // 1000} s of silence: its fallback no longer applies",
            ))
        partition.silent = now_silent
        self._latest = None  # the policy in force changes with the fallbacks
        policy = self.policy_at(position)
        cause = Cause(event_id, self.partition, position, clock, policy.version, self._record)
        store = self.store
        for sku in list(store.skus()):
            state = store.get_sku_state(sku)
            if state is None or position <= state.last_position or changed.isdisjoint(state.positions):
                continue
            if state.legacy is not None:
                self._migrate(state)
            self._use_policy(state, policy)
            state.last_position = position
            state.remember_entry(event_id, FEEDS_ENTRY, self.partition, position, APPLIED)
            publish_all(state, policy, cause, out)
            store.put_sku_state(state)


    def _refuse(self, event, reason: str, position: int, out: list) -> None:
        """The Rejection of an entry refused before it is evaluated; a command with a usable reservation, SKU and
        channel also gets its REJECTED decision, so every command is answered."""
        event_id = getattr(event, "event_id", None)
        event_id = event_id if isinstance(event_id, str) else None
        sku = getattr(event, "sku", None)
        sku = sku if isinstance(sku, str) else None
        if type(event) is ReservationCommand and event_id is not None and answerable(event):
            event_time = event.event_time if type(event.event_time) is int and event.event_time >= 0 else 0
            refuse_malformed(event, reason, Cause(event_id, self.partition, position, event_time, 0), out)
        out.append(Rejection(reason, type(event).__name__, event_id, sku, self.partition, position))

    def _forget_old_records(self) -> None:
        """Let the store drop seen event ids and finished reservations that are past their windows."""
        clock = self.state.clock
        limits = self.limits
        self._forgotten_clock = clock
        self.store.forget_before(clock - limits.duplicate_window_ms, clock - limits.reservation_retention_ms)

    def _accept_policy(self, change: PolicyChange, position: int, out: list) -> bool:
        unknown = sorted({rule.channel for rule in change.channels} - self.channels_with_topics)
        current = self.state.policies[-1][1] if self.state.policies else None
        if unknown:
            reason, detail = reasons.UNKNOWN_CHANNEL, f"channels without a topic: {', '.join(unknown)}"
        elif current is not None and change.version <= current.version:
            if change.event_id == current.event_id:
                return False  # the same policy again: a duplicate changes nothing
            reason, detail = reasons.STALE_POLICY_VERSION, f"version {change.version} <= {current.version}"
        else:
            self.state.add_policy(position, change)
            return True
        out.append(Rejection(reason, detail, change.event_id, None, self.partition, position))
        return False

    def _advance(self, event: Event, position: int, out: list) -> None:
        """Move the partition clock and expire every reservation it has reached."""
        partition = self.state
        partition.last_position = position
        if event.event_time <= partition.clock:
            return
        partition.clock = event.event_time
        due = partition.pop_due(partition.clock)
        if not due:
            return
        policy = self.policy_at(position)
        event_id = event.event_id if type(event) is not ClockTick else tick_event_id(self.partition, position)
        cause = Cause(event_id, self.partition, position, event.event_time, policy.version if policy else 0,
                      self._record)
        store = self.store
        for sku, reservation_id, expires_at in due:
            state = store.get_sku_state(sku)
            if state is None:
                continue
            reservation = state.reservations.get(reservation_id)
            if reservation is None or reservation.expires_at != expires_at:
                continue  # stale entry: the reservation ended another way
            if state.legacy is not None:
                self._migrate(state)
            self._use_policy(state, policy)
            touched = expire(state, policy, partition, self._finished, reservation_id, cause, out)
            if policy is not None:
                publish_changes(state, policy, touched, cause, out)
            store.put_sku_state(state)

    def _reregister_expiries(self, state: SkuState) -> None:
        """After a redelivery: make sure the SKU's expiring reservations are in the index (the partition state may
        be older than the SKU state after a crash between the two writes)."""
        partition = self.state
        for reservation_id, reservation in state.reservations.items():
            if reservation.expires_at is not None:
                partition.register_expiry(state.sku, reservation_id, reservation.expires_at)

    def _expire_overdue(self, state: SkuState, policy: Policy | None, cause: Cause, out: list) -> list[str]:
        """Safety net: expire the SKU's own reservations the clock has passed but the index no longer holds (the
        partition state may be newer than the SKU state after a crash between the two writes)."""
        touched: list[str] = []
        for reservation_id in state.pop_overdue(self.state.clock):
            touched.extend(expire(state, policy, self.state, self._finished, reservation_id, cause, out))
        return touched

    def _apply_to_sku(self, event, position: int, origin: EntryOrigin, out: list) -> None:
        store = self.store
        sku = event.sku
        state = store.get_sku_state(sku)
        existed = state is not None
        if existed and position <= state.last_position:
            self._reregister_expiries(state)
            return  # redelivery: already applied, its records already published
        if not existed:
            state = SkuState(sku)
        elif state.legacy is not None:
            self._migrate(state)
        policy = self.policy_at(position)
        if state.policy is not policy:
            self._use_policy(state, policy)
        state.last_position = position
        source_position = origin.source_position
        if source_position is not None:
            sources = state.sources
            applied = sources.get(origin.source)
            if applied is not None and source_position <= applied:
                if existed:
                    store.put_sku_state(state)
                return  # a repeat: the ingest stage wrote this source entry again (exact: no window)
            sources[origin.source] = source_position
        event_id = event.event_id
        seen = store.get_seen_event(sku, event_id)
        if (
            seen is not None
            and seen[1] < position
            and seen[0] >= self.state.clock - self.limits.duplicate_window_ms
        ):
            if existed:
                store.put_sku_state(state)
            return  # a duplicate the source sent (same event id) within the window: changes nothing
        # processed once, applied or refused: stored before the SKU state (a crash may keep it without the state;
        # its position then shows it is this entry's own)
        store.put_seen_event(sku, event_id, event.event_time, position)
        cause = Cause(
            event_id, self.partition, position, event.event_time, policy.version if policy is not None else 0,
            self._record,
        )
        touched: list[str] | tuple[str, ...] = ()
        problems = NO_PROBLEMS
        if state.next_expiry is not None and state.next_expiry <= self.state.clock:
            touched = self._expire_overdue(state, policy, cause, out)
        if type(event) is ReservationCommand:
            changed = apply_command(state, policy, self.state, self._finished, event, cause, out)
            decision = out[-1] if type(out[-1]) is not Rejection else out[-2]  # every command gets one decision
            kind, result, reservation_id = event.command.value, decision.reason or decision.outcome.value, event.reservation_id
        else:  # a fact: applied, whatever it does to the buckets (docs/RULES.md, section 2)
            outcome, changed, problems = apply_movement(state, policy, event)
            if outcome is not None and outcome not in reasons.ACKNOWLEDGEMENTS:
                out.append(Rejection(outcome, event.type.value, event_id, sku, self.partition, position))
                if not existed:
                    return  # nothing to keep for a SKU never seen
            kind, result, reservation_id = event.type.value, outcome or APPLIED, None
        state.remember_entry(event_id, kind, self.partition, position, result, reservation_id)
        if policy is not None and (changed or touched):
            publish_changes(state, policy, _merge(touched, changed) if touched else changed, cause, out)
        if problems:
            self._report(state, problems, cause, out)
        store.put_sku_state(state)

    def _report(self, state: SkuState, problems, cause: Cause, out: list) -> None:
        """An InventoryException per problem of an applied fact, with the location's buckets after it."""
        positions = state.positions
        for kind, location, bucket, quantity, detail in problems:
            position = positions.get(location)
            snapshot = None if position is None else (
                position.sellable, position.damaged, position.quarantine, position.in_transit, position.reserved
            )
            out.append(InventoryException(kind, state.sku, location, bucket, quantity, snapshot, cause.event_id,
                                          self.partition, cause.position, cause.event_time, detail))

    def _migrate(self, state: SkuState) -> None:
        """Move the finished reservations and event ids a state of an older format kept inside it into the store,
        as of the SKU's last position (so they answer every entry after it). Called before any change of such a
        state is put back, since the current format does not encode them."""
        finished, event_ids = state.legacy
        state.legacy = None
        position, clock = state.last_position, self.state.clock
        store = self.store
        for record in finished:
            record.position, record.finished_clock = position, clock
            store.put_finished(state.sku, record)
        for event_id in event_ids:
            store.put_seen_event(state.sku, event_id, clock, position)

    def _reevaluate_all(self, change: PolicyChange, position: int, out: list) -> None:
        """Every SKU of the partition, in sorted order, under the policy that took effect at `position`."""
        policy = self.policy_at(position)
        if policy is None or policy.effective_position != position:
            return  # this entry was rejected when it was first applied
        cause = Cause(change.event_id, self.partition, position, change.event_time, policy.version, self._record)
        store = self.store
        for sku in list(store.skus()):
            state = store.get_sku_state(sku)
            if state is None:
                continue
            if position <= state.last_position:
                self._reregister_expiries(state)
                continue
            if state.legacy is not None:
                self._migrate(state)
            self._use_policy(state, policy)
            state.last_position = position
            state.remember_entry(change.event_id, POLICY_ENTRY, self.partition, position, APPLIED)
            publish_all(state, policy, cause, out)
            store.put_sku_state(state)


class _FinishedView:
    """FinishedRecords (app.engine.reservations) over an engine's store. A record answers only entries after the one
    that wrote it, or the entry writing it now: after a crash the store may hold records written by entries that
    are applied again (they are stored before the SKU states), and those must not answer their own re-application.
    A record older than the retention answers nothing: the id is new again."""

    __slots__ = ("_engine",)

    def __init__(self, engine: PartitionEngine) -> None:
        # A weak reference: a strong one would make the engine and its view a cycle, and an engine dropped by its
        # owner (a rebalance, a replay's end) would keep its store and every state in it until the cycle collector
        # found them, which in a worker, once they are frozen (app/service/gc_pauses.py), is up to 10 minutes.
        self._engine = weakref.proxy(engine)

    def get(self, sku: str, reservation_id: str) -> FinishedReservation | None:
        engine = self._engine
        found = engine.store.get_finished(sku, reservation_id)
        if found is None:
            return None
        if found.position >= engine._position and (sku, reservation_id) not in engine._finished_now:
            return None
        if found.finished_clock < engine.state.clock - engine.limits.reservation_retention_ms:
            return None
        return found

    def remember(self, sku: str, finished: FinishedReservation) -> None:
        engine = self._engine
        finished.position = engine._position
        finished.finished_clock = engine.state.clock
        engine._finished_now.add((sku, finished.reservation_id))
        engine.store.put_finished(sku, finished)


def _merge(first, second) -> list[str] | tuple[str, ...]:
    if not first:
        return second
    merged = list(first)
    for location in second:
        if location not in merged:
            merged.append(location)
    return merged


def run_ledger(
    entries: Iterable[tuple], channels: frozenset[str] | Iterable[str], limits: EngineLimits = DEFAULT_LIMITS,
    as_records: bool = True,
) -> list[Output]:
    """The reference run: every (partition, position, event[, origin]) applied in the given order by one
    PartitionEngine per partition on fresh memory stores, the entries of one ledger record (consecutive entries of a
    partition at one offset) as a record, as the service applies them (app.wire.ledger.apply_ledger_record); the
    concatenated outputs. End-to-end tests compare the service with this. `as_records=False` applies each entry on
    its own (every change of a key is returned: what the rules decided with, entry by entry)."""
    channels = frozenset(channels)
    engines: dict[int, PartitionEngine] = {}
    outputs: list[Output] = []
    record: tuple[int, int] | None = None  # (partition, offset) of the open ledger record
    engine = None
    for partition, position, event, *origin in entries:
        offset, _ = split_position(position)
        if record != (partition, offset) or not as_records:
            if engine is not None:
                outputs.extend(engine.end_record())
            record = (partition, offset)
            engine = engines.get(partition)
            if engine is None:
                engine = engines[partition] = PartitionEngine(partition, MemoryStore(), channels, limits=limits)
            if as_records:
                engine.begin_record()
        outputs.extend(engine.apply(event, position, origin[0] if origin else NO_ORIGIN))
    if engine is not None:
        outputs.extend(engine.end_record())
    return outputs
