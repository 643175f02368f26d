"""visitors, ledgers, journeys: the three keyed stages, each a core function over a table.

The work of a stage for one partition assignment is a `StageProcessor` (agents/processor.py):
it folds commands into states held in memory and, at each flush, writes the changed states to
the table's changelog and sends what they led to, then acknowledges the events. Here it is
wired to Faust: a new processor is built on every assignment (with the group generation) and
closed on every revocation, and the agent hands each event to the current one.

A timer sweeps each table: a key whose state the core declares expired at the stage's
watermark (the newest event time it processed, never ahead of the wall clock) is deleted with
a changelog tombstone, so memory stays bounded even for customers and visitors that never
come back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agents.emit import Outbox, kafka_writer, rejection_record
from agents.processor import Expiry, Stage, StageProcessor
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
    TRAFFIC_COMMANDS,
    VISITOR_COMMANDS,
    OrderUpdated,
    TouchpointsArrived,
    VisitorClick,
)
from attribution.rows import CreditRow, IdentityConflict, IdentityLinked, Rejection
from attribution.traffic import (
    Traffic,
    apply_to_traffic,
    traffic_expires_at,
    traffic_from_wire,
    traffic_to_wire,
)
from streams.app import Topology
from streams.codecs import decode
from streams.fencing import GroupLease
from streams.metrics import Metrics

log = logging.getLogger(__name__)


def _emit_traffic_outputs(outputs: list[Any], outbox: Outbox, metrics: Metrics) -> None:
    rows = []
    for output in outputs:
        if isinstance(output, VisitorClick):
            outbox.visitor_command(output)
        else:
            rows.append(output)
            metrics.count_classification(output.status, output.reasons)
    outbox.rows(rows)


def _emit_visitor_outputs(outputs: list[Any], outbox: Outbox, metrics: Metrics) -> None:
    for output in outputs:
        if isinstance(output, TouchpointsArrived):
            outbox.journey_command(output)
        elif isinstance(output, TRAFFIC_COMMANDS):
            outbox.traffic_command(output)
        elif isinstance(output, IdentityLinked):
            metrics.identity_merges.inc()
        elif isinstance(output, IdentityConflict):
            metrics.identity_conflicts.inc()
            log.info("identity conflict on visitor %s ignored", output.visitor_id)


def _emit_ledger_outputs(outputs: list[Any], outbox: Outbox, metrics: Metrics) -> None:
    rows = []
    for output in outputs:
        if isinstance(output, OrderUpdated):
            outbox.journey_command(output)
        elif isinstance(output, Rejection):
            outbox.dead_letter(rejection_record(output, outbox.routes.pii_key, metrics))
        else:
            rows.append(output)
    outbox.rows(rows)


def _emit_journey_outputs(outputs: list[Any], outbox: Outbox, metrics: Metrics) -> None:
    rows = []
    for output in outputs:  # an erasure's commands, else rows
        if isinstance(output, JOURNEY_COMMANDS):
            outbox.journey_command(output)
        elif isinstance(output, TRAFFIC_COMMANDS):
            outbox.traffic_command(output)
        elif isinstance(output, ORDER_COMMANDS):
            outbox.order_command(output)
        elif isinstance(output, VISITOR_COMMANDS):
            outbox.visitor_command(output)
        else:
            rows.append(output)
    outbox.rows(rows)
    origin = outbox.origin()
    if origin is not None and any(isinstance(output, CreditRow) for output in outputs):
        metrics.credit_emitted_latency.observe(time.time() - origin)


TRAFFIC: Stage[Traffic] = Stage(
    "traffic",
    apply_to_traffic,
    traffic_to_wire,
    traffic_from_wire,
    _emit_traffic_outputs,
    lambda traffic: traffic.newest_event_at,
    traffic_expires_at,
)
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


class StageRunner:
    """A stage's current processor, rebuilt on every assignment and closed on revocation."""

    def __init__(self, topology: Topology, stage: Stage[Any], source: Any, table: Any) -> None:
        self.topology = topology
        self.stage = stage
        self.source = source
        self.source_topic: str = source.get_topic_name()
        self.store = table.data  # streams/restore.py::BulkRestoreStore
        self.changelog_topic: str = table.changelog_topic.get_topic_name()
        self.expiry = Expiry()
        self.current: StageProcessor[Any] | None = None
        self.ack: Callable[[Any], Any] | None = None  # the agent's stream's

    async def _ack(self, event: Any) -> None:
        if self.ack is not None:
            await self.ack(event)

    def assigned(self, partitions: set[int], generation: int, lease: GroupLease) -> None:
        settings = self.topology.settings
        self.expiry.keep_only(partitions)
        self.current = StageProcessor(
            self.stage,
            rules=settings.rules,
            generation=generation,
            partitions=partitions,
            store=self.store,
            changelog_topic=self.changelog_topic,
            outbox=Outbox(self.topology),
            writer=kafka_writer(self.topology),
            fence=lease,
            ack=self._ack,
            metrics=self.topology.metrics,
            expiry=self.expiry,
            max_units=settings.stage_batch_events,
        )

    async def revoked(self, wait_seconds: float) -> None:
        processor, self.current = self.current, None
        if processor is not None:
            await processor.close(wait_seconds)

    async def flush(self) -> bool:
        processor = self.current
        return True if processor is None else await processor.flush()

    async def run(self, stream: Any) -> None:
        """The agent: each event to the current processor, a flush when its batch is full and
        every `stage_batch_seconds`."""
        settings = self.topology.settings
        stream = stream.noack()
        self.ack = stream.ack

        async def flush_periodically() -> None:
            while True:
                await asyncio.sleep(settings.stage_batch_seconds)
                try:
                    await self.flush()
                except Exception:  # the next tick, or the next full batch, tries again
                    log.exception("%s: flushing failed", self.stage.name)

        flusher = asyncio.create_task(flush_periodically())
        try:
            async for event in stream.events():
                processor = self.current
                partition = event.message.partition
                if processor is None or not processor.owns(partition):
                    # Between a revocation and the next assignment, or fetched before it: not
                    # acknowledged, read again from the last commit by the partition's owner.
                    continue
                record = decode(event.value)
                # An outbox's array of {"key", "command"}, all keys of this partition; a lone
                # command (as `attribution erase` sends it) is keyed by the record's key.
                items = (
                    record
                    if isinstance(record, list)
                    else [{"key": event.key.decode(), "command": record}]
                )
                processor.submit(event, partition, items, event.message.timestamp)
                backoff = 0.1
                while processor.full and not processor.closed and not await processor.flush():
                    await asyncio.sleep(backoff)  # back-pressure: read no more until it is saved
                    backoff = min(backoff * 2, 5.0)
        finally:
            flusher.cancel()
            # Whatever was fully processed is saved now rather than processed again after a
            # restart; if saving fails, those events simply come again.
            await self.flush()

    async def sweep(self) -> None:
        metrics = self.topology.metrics
        processor = self.current
        if processor is not None:
            expired = processor.expire(datetime.now(UTC))
            if expired:
                await processor.flush()
                metrics.swept_keys.labels(self.stage.name).inc(expired)
                log.info("%s: swept %d idle keys", self.stage.name, expired)
        metrics.table_keys.labels(self.stage.name).set(self.store.state_count())


def register(topology: Topology) -> None:
    app: Any = topology.app
    settings = topology.settings
    lease = GroupLease.of(app)
    runners = [
        StageRunner(topology, TRAFFIC, topology.traffic_commands, topology.traffic),
        StageRunner(topology, VISITORS, topology.visitor_commands, topology.visitors),
        StageRunner(topology, LEDGERS, topology.order_commands, topology.ledgers),
        StageRunner(topology, JOURNEYS, topology.journey_commands, topology.journeys),
    ]
    for runner in runners:
        app.agent(runner.source, name=runner.stage.name)(runner.run)
        app.timer(interval=settings.sweep_interval_seconds, name=f"sweep-{runner.stage.name}")(
            runner.sweep
        )

    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # Eager rebalancing revokes the whole assignment; what this worker keeps comes back in
        # the next assignment, to a new processor.
        lease.watch()
        lease.assigned_generation = None
        wait_seconds = app.conf.broker_session_timeout / 2
        for runner in runners:
            await runner.revoked(wait_seconds)

    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        lease.watch()
        generation = int(app.consumer_generation_id)
        lease.assigned_generation = generation
        topology.metrics.consumer_generation.set(generation)
        for runner in runners:
            partitions = {tp.partition for tp in assigned if tp.topic == runner.source_topic}
            runner.assigned(partitions, generation, lease)
        log.info("stages assigned in generation %d", generation)

    app.on_partitions_revoked.connect(on_revoked)
    app.on_partitions_assigned.connect(on_assigned)
