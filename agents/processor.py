"""One keyed stage's work for one partition assignment: fold commands, then save and send.

A `StageProcessor` is built for each assignment (the partitions of the stage's source topic
this worker owns, and the group generation they were assigned in) and closed when they are
revoked; the next assignment gets a new one. It never writes for a partition outside its
assignment, nor after it was closed:

- `submit` folds an event's commands into the states of their keys, held in memory with the
  outputs they led to (an `Outbox`), and keeps the event to acknowledge it later;
- `flush` sends the outputs and awaits Kafka's acknowledgement, then writes the changed states
  to the table's changelog and awaits that, and only then puts the states in the table (the
  very bytes the changelog has, so the table never runs ahead of what a restore would give) and
  acknowledges the events. If Kafka refuses anything, nothing is acknowledged and everything
  is kept for the next flush; if the group coordinator has not confirmed lately that this
  worker still holds the generation (`Fence`), nothing is written at all;
- `close` (on revoke) discards what was not saved: the events behind it were not acknowledged,
  so they are read again from the last commit by whoever owns their partition next. A flush
  that is under way is waited for, and does not acknowledge once the processor is closed.

No Faust here: the table, the Kafka writer, the fence and the acknowledgement are passed in
(`agents/stages.py` wires them to Faust), so the unit tests drive it directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from agents.emit import Batch, Outbox, Record, SendFailed, Writer, rejection_record
from attribution.messages import Wire, command_from_wire, wire_event_ids
from attribution.rows import Rejection
from attribution.rules import Rules
from streams.codecs import decode, encode
from streams.fencing import generation_headers, marker_key
from streams.metrics import Metrics

log = logging.getLogger(__name__)

State = TypeVar("State")


@dataclass(frozen=True)
class Stage(Generic[State]):
    """How one keyed stage reads, folds, writes and expires its state."""

    name: str
    apply: Callable[[State | None, Any, Rules], tuple[State | None, list[Any]]]
    to_wire: Callable[[State], Wire]
    from_wire: Callable[[Wire], State]
    # Puts the outputs of one command in the outbox (and counts what it should).
    emit: Callable[[list[Any], Outbox, Metrics], None]
    newest_event_at: Callable[[State], datetime | None]
    expires_at: Callable[[State, Rules], datetime | None]


class Fence(Protocol):
    def holds(self, generation: int) -> bool:
        """True while this worker may write for the assignment of `generation`."""


class StateStore(Protocol):
    """A table's states in memory (encoded), with the partition of each key."""

    def state_of(self, key: bytes) -> bytes | None: ...

    def save_state(self, key: bytes, value: bytes, partition: int) -> None: ...

    def drop_state(self, key: bytes) -> None: ...

    def keys_of(self, partitions: Collection[int]) -> list[tuple[bytes, int]]:
        """The keys of these partitions, each with its partition."""

    def state_count(self) -> int: ...


class MemoryStates:
    """A `StateStore` on a dict (the unit tests' table)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.partition_of: dict[bytes, int] = {}

    def state_of(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def save_state(self, key: bytes, value: bytes, partition: int) -> None:
        self.data[key] = value
        self.partition_of[key] = partition

    def drop_state(self, key: bytes) -> None:
        self.data.pop(key, None)
        self.partition_of.pop(key, None)

    def keys_of(self, partitions: Collection[int]) -> list[tuple[bytes, int]]:
        return [(key, p) for key, p in self.partition_of.items() if p in partitions]

    def state_count(self) -> int:
        return len(self.data)


class Expiry:
    """When each key of a table expires (with its partition), and the stage's watermark.

    The watermark is the newest event time the stage processed, never ahead of the wall
    clock: one event stamped in the future must not make every key look idle. Keys restored
    from the changelog are indexed on the first sweep. Shared by a stage's processors.
    """

    def __init__(self) -> None:
        self.newest_event_at: datetime | None = None
        self.by_key: dict[bytes, tuple[datetime | None, int]] = {}

    def record(
        self, key: bytes, partition: int, newest: datetime | None, expires_at: datetime | None
    ) -> None:
        self.by_key[key] = (expires_at, partition)
        if newest is not None and (self.newest_event_at is None or newest > self.newest_event_at):
            self.newest_event_at = newest

    def watermark(self, now: datetime) -> datetime | None:
        return None if self.newest_event_at is None else min(self.newest_event_at, now)

    def keep_only(self, partitions: Collection[int]) -> None:
        """Forget the keys of partitions this worker no longer owns."""
        self.by_key = {key: entry for key, entry in self.by_key.items() if entry[1] in partitions}


class StageProcessor(Generic[State]):
    """One stage over one assignment (see the module doc)."""

    def __init__(
        self,
        stage: Stage[State],
        *,
        rules: Rules,
        generation: int,
        partitions: Iterable[int],
        store: StateStore,
        changelog_topic: str,
        outbox: Outbox,
        writer: Writer,
        fence: Fence,
        ack: Callable[[Any], Awaitable[Any]],
        metrics: Metrics,
        expiry: Expiry | None = None,
        max_units: int = 1000,
    ) -> None:
        self.stage = stage
        self.generation = generation
        self.partitions = frozenset(partitions)
        self._rules = rules
        self._store = store
        self._changelog_topic = changelog_topic
        self._outbox = outbox
        self._writer = writer
        self._fence = fence
        self._ack = ack
        self._metrics = metrics
        self._expiry = expiry if expiry is not None else Expiry()
        self._max_units = max_units
        # Changed since the last flush, per key: the new state (None: deleted) and partition.
        self._unsaved: dict[bytes, tuple[State | None, int]] = {}
        # What the flush under way is writing; read through until Kafka has it.
        self._saving: dict[bytes, tuple[State | None, int]] = {}
        self._events: list[Any] = []
        self._units = 0
        self._origin: float | None = None
        self._marked: set[int] = set()  # partitions whose changelog has this generation's marker
        self._lock = asyncio.Lock()
        self._closed = False
        self._fenced_since: float | None = None
        outbox.origin = lambda: self._origin

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def full(self) -> bool:
        return self._units >= self._max_units

    @property
    def pending_events(self) -> int:
        return len(self._events)

    def owns(self, partition: int) -> bool:
        return not self._closed and partition in self.partitions

    def submit(
        self, event: Any, partition: int, items: list[dict[str, Any]], origin: float | None = None
    ) -> bool:
        """Fold an event's commands (`{"key", "command"}` items, all of `partition`); False,
        and nothing done, if the partition is not this processor's (the event must not be
        acknowledged: it comes again to its owner)."""
        if not self.owns(partition):
            return False
        self._origin = origin
        for item in items:
            self._handle(item["key"].encode(), item["command"], partition)
        self._events.append(event)
        self._units += len(items)
        return True

    def _state(self, key: bytes) -> State | None:
        held = self._unsaved.get(key) or self._saving.get(key)
        if held is not None:
            return held[0]
        stored = self._store.state_of(key)
        return None if stored is None else self.stage.from_wire(decode(stored))

    def _handle(self, key: bytes, wire: Wire, partition: int) -> None:
        state = self._state(key)
        try:
            state, outputs = self.stage.apply(state, command_from_wire(wire), self._rules)
        except Exception as error:  # a bug must not stop the pipeline: dead-letter it
            event_ids = ",".join(wire_event_ids(wire))
            log.exception(
                "stage %s failed on key %r (events %s)",
                self.stage.name,
                key,
                event_ids,
                extra={"event_id": event_ids},
            )
            rejection = Rejection(event_ids, "", f"{self.stage.name} failed: {error!r}", wire)
            self._outbox.dead_letter(
                rejection_record(rejection, self._outbox.routes.pii_key, self._metrics)
            )
            return
        self._unsaved[key] = (state, partition)
        self.stage.emit(outputs, self._outbox, self._metrics)

    def expire(self, now: datetime) -> int:
        """Mark this assignment's keys that expired at the stage's watermark as deleted (their
        tombstones go with the next flush); how many."""
        if self._closed:
            return 0
        watermark = self._expiry.watermark(now)
        if watermark is None:
            return 0
        by_key = self._expiry.by_key
        for key, partition in self._store.keys_of(self.partitions):
            if key not in by_key:
                stored = self._store.state_of(key)
                if stored is not None:
                    state = self.stage.from_wire(decode(stored))
                    self._record_expiry(key, partition, state)
        expired = [
            (key, partition)
            for key, (expires_at, partition) in by_key.items()
            if (expires_at is None or expires_at < watermark)
            and partition in self.partitions
            and key not in self._unsaved
            and key not in self._saving
        ]
        for key, partition in expired:
            del by_key[key]
            self._unsaved[key] = (None, partition)
        return len(expired)

    def _record_expiry(self, key: bytes, partition: int, state: State) -> None:
        self._expiry.record(
            key,
            partition,
            self.stage.newest_event_at(state),
            self.stage.expires_at(state, self._rules),
        )

    async def flush(self) -> bool:
        """Save and send what was submitted, then acknowledge its events; False if nothing
        was acknowledged (fenced, Kafka refused, or closed), everything kept for a retry."""
        async with self._lock:
            if self._closed:
                return False
            if not (self._unsaved or self._events or not self._outbox.empty):
                return True
            if not self._fence.holds(self.generation):
                self._note_fenced()
                return False
            self._fenced_since = None
            events, self._events = self._events, []
            units, self._units = self._units, 0
            saving, self._unsaved = self._unsaved, {}
            self._saving = saving
            headers = generation_headers(self.generation)
            changelog, values = self._changelog_batches(saving, headers)
            outputs = self._outbox.take(headers)
            try:
                # Outputs first: a state is saved only once what it led to is in Kafka, so a
                # command redelivered after a crash finds either its effect and its outputs, or
                # neither (and makes both again). No stage has to resend to repair a lost output.
                await self._writer.write(outputs)
                await self._writer.write(changelog)
            except SendFailed:
                log.exception(
                    "%s: flush of %d events failed, nothing acknowledged; will retry",
                    self.stage.name,
                    len(events),
                )
                self._unsaved = {**saving, **self._unsaved}
                self._outbox.put_back(outputs)
                self._events = events + self._events
                self._units += units
                return False
            finally:
                self._saving = {}
            self._marked.update(batch.partition for batch in changelog)
            self._saved(saving, values)
            if self._closed:  # revoked while Kafka confirmed: those acks would be stale
                return False
            for event in events:
                await self._ack(event)
            return True

    def _changelog_batches(
        self, saving: dict[bytes, tuple[State | None, int]], headers: list[tuple[str, bytes]]
    ) -> tuple[list[Batch], dict[bytes, bytes]]:
        """The changelog's batches, and the value written for each state (the table stores
        those same bytes once Kafka has them, rather than encoding the state again)."""
        by_partition: dict[int, list[Record]] = {}
        values: dict[bytes, bytes] = {}
        for key, (state, partition) in saving.items():
            value: bytes | None
            if state is None:
                if self._store.state_of(key) is None:
                    continue  # never saved: nothing to delete
                value = None
            else:
                value = values[key] = encode(self.stage.to_wire(state))
            records = by_partition.get(partition)
            if records is None:
                records = by_partition[partition] = []
                if partition not in self._marked:
                    records.append((marker_key(self.generation), str(self.generation).encode()))
            records.append((key, value))
        batches = [
            Batch(self._changelog_topic, partition, records, None, headers)
            for partition, records in by_partition.items()
        ]
        return batches, values

    def _saved(
        self, saving: dict[bytes, tuple[State | None, int]], values: dict[bytes, bytes]
    ) -> None:
        for key, (state, partition) in saving.items():
            if state is None:
                self._store.drop_state(key)
                self._expiry.by_key.pop(key, None)
            else:
                self._store.save_state(key, values[key], partition)
                self._record_expiry(key, partition, state)

    def _note_fenced(self) -> None:
        self._metrics.fenced_flushes.labels(self.stage.name).inc()
        now = time.monotonic()
        if self._fenced_since is None:
            self._fenced_since = now
            log.warning(
                "%s: not writing for generation %d (partitions %s): the group has not "
                "confirmed lately that this worker still owns them",
                self.stage.name,
                self.generation,
                sorted(self.partitions),
            )

    async def close(self, wait_seconds: float) -> None:
        """Revoked: discard what was not saved (its events were not acknowledged, they come
        again from the last commit) and wait up to `wait_seconds` for a flush under way."""
        self._closed = True
        discarded = (len(self._unsaved), len(self._events))
        self._unsaved, self._events, self._units = {}, [], 0
        self._outbox.clear()
        try:
            await asyncio.wait_for(self._lock.acquire(), wait_seconds)
        except TimeoutError:
            log.warning(
                "%s: a flush of generation %d still waits for Kafka after %.0f s",
                self.stage.name,
                self.generation,
                wait_seconds,
            )
        else:
            self._lock.release()
        log.info(
            "%s: generation %d closed; %d unsaved states and %d unacknowledged events "
            "discarded (read again from the last commit)",
            self.stage.name,
            self.generation,
            *discarded,
        )
