"""visitors, ledgers, journeys: the three keyed stages, each a core function over a table.

A key's state is decoded once and kept while its commands are folded in; it is
written back (table and changelog) once per flush of the pending events.

A timer sweeps each table: a key whose state the core declares expired at the
stage's watermark (the newest event time it processed, never ahead of the wall
clock) is deleted with a changelog tombstone, so memory stays bounded even for
customers and visitors that never come back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from agents.batches import pending_events
from agents.emit import Outbox, key_partition, origin_timestamp, send_rejection
from attribution.identity import (
    Visitor,
    apply_to_visitor,
    visitor_expires_at,
    visitor_from_wire,
    visitor_to_wire,
)
from attribution.journey import (
    Journey,
    apply_to_journey,
    journey_expires_at,
    journey_from_wire,
    journey_to_wire,
)
from attribution.ledger import (
    Ledger,
    apply_to_ledger,
    ledger_expires_at,
    ledger_from_wire,
    ledger_newest_event_at,
    ledger_to_wire,
)
from attribution.messages import (
    JOURNEY_COMMANDS,
    ORDER_COMMANDS,
    VISITOR_COMMANDS,
    OrderUpdated,
    TouchpointsArrived,
    Wire,
    command_from_wire,
    wire_event_ids,
)
from attribution.rows import CreditRow, IdentityConflict, IdentityLinked, Rejection
from attribution.rules import Rules
from streams.app import Topology
from streams.codecs import decode, encode

log = logging.getLogger(__name__)

State = TypeVar("State")


@dataclass(frozen=True)
class Stage(Generic[State]):
    """How one keyed stage reads, folds, writes and expires its state."""

    name: str
    apply: Callable[[State | None, Any, Rules], tuple[State | None, list[Any]]]
    to_wire: Callable[[State], Wire]
    from_wire: Callable[[Wire], State]
    emit: Callable[[Topology, list[Any], Outbox], Awaitable[None]]
    newest_event_at: Callable[[State], datetime | None]
    expires_at: Callable[[State, Rules], datetime | None]


async def _emit_visitor_outputs(topology: Topology, outputs: list[Any], outbox: Outbox) -> None:
    for output in outputs:
        if isinstance(output, TouchpointsArrived):
            outbox.journey_command(output)
        elif isinstance(output, IdentityLinked):
            topology.metrics.identity_merges.inc()
        elif isinstance(output, IdentityConflict):
            topology.metrics.identity_conflicts.inc()
            log.info("identity conflict on visitor %s ignored", output.visitor_id)


async def _emit_ledger_outputs(topology: Topology, outputs: list[Any], outbox: Outbox) -> None:
    rows = []
    for output in outputs:
        if isinstance(output, OrderUpdated):
            outbox.journey_command(output)
        elif isinstance(output, Rejection):
            await send_rejection(topology, output)
        else:
            rows.append(output)
    outbox.rows(rows)


async def _emit_journey_outputs(topology: Topology, outputs: list[Any], outbox: Outbox) -> None:
    rows = []
    for output in outputs:  # an erasure's commands, else rows
        if isinstance(output, JOURNEY_COMMANDS):
            outbox.journey_command(output)
        elif isinstance(output, ORDER_COMMANDS):
            outbox.order_command(output)
        elif isinstance(output, VISITOR_COMMANDS):
            outbox.visitor_command(output)
        else:
            rows.append(output)
    outbox.rows(rows)
    origin = origin_timestamp()
    if origin is not None and any(isinstance(output, CreditRow) for output in outputs):
        topology.metrics.credit_emitted_latency.observe(time.time() - origin)


VISITORS: Stage[Visitor] = Stage(
    "visitors",
    apply_to_visitor,
    visitor_to_wire,
    visitor_from_wire,
    _emit_visitor_outputs,
    lambda visitor: visitor.newest_event_at,
    visitor_expires_at,
)
LEDGERS: Stage[Ledger] = Stage(
    "ledgers",
    apply_to_ledger,
    ledger_to_wire,
    ledger_from_wire,
    _emit_ledger_outputs,
    ledger_newest_event_at,
    ledger_expires_at,
)
JOURNEYS: Stage[Journey] = Stage(
    "journeys",
    apply_to_journey,
    journey_to_wire,
    journey_from_wire,
    _emit_journey_outputs,
    lambda journey: journey.newest_event_at,
    journey_expires_at,
)


class Expiry:
    """When each key of a table expires, and the stage's watermark.

    The watermark is the newest event time the stage processed, never ahead of the
    wall clock: one event stamped in the future must not make every key look idle.
    Keys restored from the changelog are indexed on the first sweep.
    """

    def __init__(self) -> None:
        self.newest_event_at: datetime | None = None
        self.by_key: dict[bytes, datetime | None] = {}

    def record(self, key: bytes, newest: datetime | None, expires_at: datetime | None) -> None:
        self.by_key[key] = expires_at
        if newest is not None and (self.newest_event_at is None or newest > self.newest_event_at):
            self.newest_event_at = newest

    def watermark(self, now: datetime) -> datetime | None:
        return None if self.newest_event_at is None else min(self.newest_event_at, now)


class Changelog:
    """A table's changelog records, sent as one Kafka batch per partition.

    Faust's `send_changelog` takes every record through its per-message path (a future, its
    producer buffer, its sensors), and a flush writes one record per changed key. The batches
    go to the aiokafka producer underneath Faust's, which Faust flushes before it commits
    offsets, so an event is still committed only after the state it changed is in Kafka.
    Every write of a table goes through here, tombstones included, so that per partition
    they reach the changelog in the order they were made.
    """

    def __init__(self, topology: Topology, table: Any) -> None:
        self._topology = topology
        self._table = table
        self._pending: dict[int, list[tuple[bytes, bytes | None]]] = {}
        # The stage's flush and its sweep both send; one at a time keeps their order.
        self._sending = asyncio.Lock()

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Queue a key's new value (None: deleted) for the next `send`."""
        self._pending.setdefault(partition, []).append((key, value))

    def forget(self, key: bytes, partition: int) -> None:
        """Delete a key, and tell the changelog so that a restart does not bring it back."""
        if self._table.data.pop(key, None) is not None:
            self.put(partition, key, None)

    async def send(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        producer = self._topology.app.producer._ensure_producer()
        topic = self._table.changelog_topic.get_topic_name()
        async with self._sending:
            for partition, records in pending.items():
                batch = producer.create_batch()
                for key, value in records:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        await producer.send_batch(batch, topic, partition=partition)
                        batch = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=None)
                await producer.send_batch(batch, topic, partition=partition)


def _register_stage(topology: Topology, stage: Stage[Any], source: Any, table: Any) -> None:
    settings = topology.settings
    rules = settings.rules
    expiry = Expiry()
    changelog = Changelog(topology, table)

    async def run(stream: Any) -> None:
        # State changed since the last flush, per key, with the partition of its changelog.
        unsaved: dict[bytes, tuple[Any, int]] = {}
        outbox = Outbox(topology)

        async def save() -> bool:
            for key, (state, partition) in unsaved.items():
                if state is None:  # an erased customer's
                    expiry.by_key.pop(key, None)
                    changelog.forget(key, partition)
                    continue
                value = encode(stage.to_wire(state))
                table.data[key] = value
                changelog.put(partition, key, value)
                expiry.record(key, stage.newest_event_at(state), stage.expires_at(state, rules))
            unsaved.clear()
            await changelog.send()
            return await outbox.send()

        async def handle(key: bytes, wire: Wire, partition: int) -> None:
            held = unsaved.get(key)
            if held is not None:
                state = held[0]
            else:
                stored = table.data.get(key)
                state = None if stored is None else stage.from_wire(decode(stored))
            try:
                state, outputs = stage.apply(state, command_from_wire(wire), rules)
            except Exception as error:  # a bug must not stop the pipeline: dead-letter it
                event_ids = ",".join(wire_event_ids(wire))
                log.exception(
                    "stage %s failed on key %r (events %s)",
                    stage.name,
                    key,
                    event_ids,
                    extra={"event_id": event_ids},
                )
                await send_rejection(
                    topology, Rejection(event_ids, "", f"{stage.name} failed: {error!r}", wire)
                )
            else:
                unsaved[key] = (state, partition)
                await stage.emit(topology, outputs, outbox)

        async with pending_events(
            stream, settings.stage_batch_events, settings.stage_batch_seconds, save
        ) as pending:
            async for event in pending.events():
                record = decode(event.value)
                # An outbox's array of {"key", "command"}, all keys of this partition; a lone
                # command (as `attribution erase` sends it) is keyed by the record's key.
                items = (
                    record
                    if isinstance(record, list)
                    else [{"key": event.key.decode(), "command": record}]
                )
                for item in items:
                    await handle(item["key"].encode(), item["command"], event.message.partition)
                await pending.done(event, len(items))

    topology.app.agent(source, name=stage.name)(run)

    async def sweep() -> None:
        topology.metrics.table_keys.labels(stage.name).set(len(table.data))
        watermark = expiry.watermark(datetime.now(UTC))
        if watermark is None:
            return
        # Only keys of partitions this worker owns: another owner may have updated the rest.
        source_topic = source.get_topic_name()
        owned = {
            tp.partition
            for tp in topology.app.assignor.assigned_actives()
            if tp.topic == source_topic
        }
        for key in table.data.keys() - expiry.by_key.keys():
            state = stage.from_wire(decode(table.data[key]))
            expiry.record(key, stage.newest_event_at(state), stage.expires_at(state, rules))
        expired = [
            (key, partition)
            for key, expires_at in expiry.by_key.items()
            if (expires_at is None or expires_at < watermark)
            and (partition := key_partition(key, settings.partitions)) in owned
        ]
        for key, partition in expired:
            del expiry.by_key[key]
            changelog.forget(key, partition)
        await changelog.send()
        topology.metrics.swept_keys.labels(stage.name).inc(len(expired))
        topology.metrics.table_keys.labels(stage.name).set(len(table.data))
        if expired:
            log.info("%s: swept %d idle keys at watermark %s", stage.name, len(expired), watermark)

    topology.app.timer(interval=settings.sweep_interval_seconds, name=f"sweep-{stage.name}")(sweep)


def register(topology: Topology) -> None:
    _register_stage(topology, VISITORS, topology.visitor_commands, topology.visitors)
    _register_stage(topology, LEDGERS, topology.order_commands, topology.ledgers)
    _register_stage(topology, JOURNEYS, topology.journey_commands, topology.journeys)
