"""A stage's processor for one assignment, without Faust or Kafka: what a flush writes, what it
acknowledges, and what it never does (write when fenced, acknowledge after a failed send, write
or acknowledge for a partition it no longer owns)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry

from agents.emit import Batch, Outbox, Routes, SendFailed, key_partition
from agents.processor import MemoryStates, Stage, StageProcessor
from agents.stages import JOURNEYS, LEDGERS, TRAFFIC, VISITORS
from attribution.identity import Visitor, apply_to_visitor
from attribution.messages import (
    JourneyCommand,
    OrderFacts,
    OrderUpdated,
    Touchpoint,
    TouchpointsArrived,
    VisitorLink,
    command_from_wire,
    command_to_wire,
)
from attribution.replay import LocalPipeline
from attribution.routing import route_event
from attribution.rules import Rules
from schemas.events import validate_event
from simulation.storefront import Storefront
from streams.codecs import decode, decode_row_record, encode
from streams.fencing import ChangelogFence, is_marker, record_generation
from streams.metrics import Metrics
from streams.settings import Settings
from tests.unit.helpers import CATALOG, T0, at, click, event, instant

PARTITIONS = 4
CHANGELOG = "visitors-changelog"
ROUTES = Routes.unprefixed(PARTITIONS)


class FakeKafka:
    """A `Writer` that keeps what it was given, fails while told to, or waits for a gate."""

    def __init__(self) -> None:
        self.written: list[Batch] = []
        self.failing = False
        self.refused_topic: str | None = None
        self.gate: asyncio.Event | None = None

    async def write(self, batches: Any) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.failing or any(batch.topic == self.refused_topic for batch in batches):
            raise SendFailed("injected: the broker refused the batch")
        self.written.extend(batches)

    def changelog(self) -> list[tuple[bytes | None, bytes | None, int | None]]:
        return [
            (key, value, record_generation(batch.headers))
            for batch in self.written
            if batch.topic == CHANGELOG
            for key, value in batch.records
        ]

    def changelog_keys(self) -> list[bytes]:
        return [key for key, _, _ in self.changelog() if key is not None and not is_marker(key)]

    def journey_commands(self) -> int:
        return sum(len(b.records) for b in self.written if b.topic == "journey-commands")

    def forwarded_clicks(self) -> list[list[str]]:
        """Per command sent to a journey, the event ids of the clicks it carries."""
        commands = [
            command_from_wire(item["command"])
            for batch in self.written
            if batch.topic == "journey-commands"
            for _, value in batch.records
            for item in decode(value or b"[]")
        ]
        return [
            [touchpoint.event_id for touchpoint in command.touchpoints]
            for command in commands
            if isinstance(command, TouchpointsArrived)
        ]

    def credit_rows(self) -> list[dict[str, Any]]:
        return [
            dict(zip(block.columns, values, strict=True))
            for batch in self.written
            if batch.topic == "rows"
            for _, value in batch.records
            for block in decode_row_record(value or b"[]")
            if block.table == "credits"
            for values in block.rows
        ]


class Lease:
    def __init__(self) -> None:
        self.holding = True

    def holds(self, generation: int) -> bool:
        return self.holding


class Harness:
    def __init__(
        self,
        generation: int = 7,
        partitions: tuple[int, ...] = (0, 1, 2, 3),
        stage: Stage[Any] = VISITORS,
    ) -> None:
        self.stage = stage
        self.kafka = FakeKafka()
        self.lease = Lease()
        self.store = MemoryStates()
        self.acked: list[str] = []
        self.metrics = Metrics(CollectorRegistry())
        self.processor = self.build(generation, partitions)

    def build(self, generation: int, partitions: tuple[int, ...]) -> StageProcessor[Any]:
        async def ack(event: str) -> None:
            self.acked.append(event)

        return StageProcessor(
            self.stage,
            rules=Settings().rules,
            generation=generation,
            partitions=partitions,
            store=self.store,
            changelog_topic=CHANGELOG,
            outbox=Outbox(ROUTES),
            writer=self.kafka,
            fence=self.lease,
            ack=ack,
            metrics=self.metrics,
            max_units=100,
        )

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def stored(self, key: bytes) -> Visitor:
        visitor: Visitor = VISITORS.from_wire(decode(self.store.data[key]))
        return visitor


def visitor_items(*events: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """(partition, {"key", "command"}) of the visitor commands the events route to."""
    for routed_event in events:
        for command in route_event(routed_event, CATALOG).to_visitors:
            key = command.visitor_id
            yield (
                key_partition(key.encode(), PARTITIONS),
                {"key": key, "command": command_to_wire(command)},
            )


def submit(processor: StageProcessor[Any], name: str, *events: Any) -> int:
    """Submit each command as its own event named `name-<n>`; the partition of the last one."""
    partition = -1
    for n, (partition, item) in enumerate(visitor_items(*events)):
        assert processor.submit(f"{name}-{n}", partition, [item])
    return partition


def clicks_then_identify(visitor: str, customer: str) -> list[Any]:
    return [
        click(f"{visitor}-c1", at(0), visitor, "anna"),
        click(f"{visitor}-c2", at(1), visitor, "bob"),
        event("identify", f"{visitor}-i", at(2), visitor_id=visitor, customer_id=customer),
    ]


def test_a_flush_writes_states_and_outputs_then_acknowledges() -> None:
    harness = Harness()
    processor = harness.processor
    submit(processor, "e", *clicks_then_identify("v1", "c1"))
    assert harness.store.data == {}  # nothing in the table before Kafka has it

    assert asyncio.run(processor.flush())

    assert harness.acked == ["e-0", "e-1", "e-2"]
    assert harness.kafka.changelog_keys() == [b"v1"]
    # the partition's first write of the generation starts with its marker, all stamped
    first_key, _, _ = harness.kafka.changelog()[0]
    assert is_marker(first_key)
    assert {generation for _, _, generation in harness.kafka.changelog()} == {7}
    assert harness.kafka.journey_commands() == 1  # the clicks travel to the customer's journey
    assert set(harness.store.data) == {b"v1"}


def test_a_failed_send_acknowledges_nothing_and_the_retry_sends_it_all() -> None:
    harness = Harness()
    processor = harness.processor
    submit(processor, "e", *clicks_then_identify("v1", "c1"))
    harness.kafka.failing = True

    assert not asyncio.run(processor.flush())
    assert harness.acked == []
    assert harness.store.data == {}

    harness.kafka.failing = False
    assert asyncio.run(processor.flush())
    assert harness.acked == ["e-0", "e-1", "e-2"]
    assert harness.kafka.changelog_keys() == [b"v1"]
    assert harness.kafka.journey_commands() == 1


def test_a_state_is_saved_only_once_its_outputs_are_in_kafka() -> None:
    harness = Harness()
    processor = harness.processor
    submit(processor, "e", *clicks_then_identify("v1", "c1"))
    harness.kafka.refused_topic = "journey-commands"
    assert not asyncio.run(processor.flush())
    assert harness.kafka.changelog_keys() == []  # not while its outputs were refused

    harness.kafka.refused_topic = CHANGELOG
    assert not asyncio.run(processor.flush())
    assert harness.kafka.journey_commands() == 1
    assert harness.acked == [] and harness.store.data == {}

    harness.kafka.refused_topic = None
    assert asyncio.run(processor.flush())
    assert harness.kafka.changelog_keys() == [b"v1"]
    assert harness.acked == ["e-0", "e-1", "e-2"]


def journey_items() -> list[dict[str, Any]]:
    """An order of customer c1 and, later in the stream, a click of theirs before it."""
    facts = OrderFacts("o1-e", "o1", "c1", instant(2), "USD", Decimal("50.00"))
    touchpoint = Touchpoint("c1-click", instant(1), "anna", "spring", "instagram", "micro")
    commands: list[JourneyCommand] = [
        OrderUpdated(facts, (), ()),
        TouchpointsArrived("c1", "v1", instant(1), (touchpoint,)),
    ]
    return [{"key": "c1", "command": command_to_wire(command)} for command in commands]


def test_a_journey_redelivered_after_a_crash_sends_its_rows_once_more_and_never_again() -> None:
    """The crash falls between the rows reaching Kafka and the state reaching its changelog:
    the redelivered commands make the same rows again. Redelivered once the state was saved,
    they change nothing and send nothing (no stage resends its rows to repair a loss)."""
    harness = Harness(stage=JOURNEYS)
    partition = key_partition(b"c1", PARTITIONS)

    def deliver(processor: StageProcessor[Any], name: str) -> None:
        for n, item in enumerate(journey_items()):
            assert processor.submit(f"{name}-{n}", partition, [item])

    deliver(harness.processor, "first")
    harness.kafka.refused_topic = CHANGELOG
    assert not asyncio.run(harness.processor.flush())
    sent_before_the_crash = harness.kafka.credit_rows()
    # the order unattributed, then credited to the click (the unattributed rows retracted)
    assert [
        row["touchpoint_event_id"] for row in sent_before_the_crash if row["model"] == "linear"
    ] == ["", "c1-click", ""]

    asyncio.run(harness.processor.close(1.0))  # the crash: unsaved states are gone
    harness.kafka.refused_topic = None
    restarted = harness.build(8, (0, 1, 2, 3))
    deliver(restarted, "again")
    assert asyncio.run(restarted.flush())
    resent = harness.kafka.credit_rows()[len(sent_before_the_crash) :]
    assert resent == sent_before_the_crash

    deliver(restarted, "third")
    assert asyncio.run(restarted.flush())
    assert len(harness.kafka.credit_rows()) == 2 * len(sent_before_the_crash)
    assert harness.acked == ["again-0", "again-1", "third-0", "third-1"]


def test_a_fenced_processor_writes_nothing_until_the_group_confirms_it() -> None:
    harness = Harness()
    processor = harness.processor
    submit(processor, "e", *clicks_then_identify("v1", "c1"))
    harness.lease.holding = False

    assert not asyncio.run(processor.flush())
    assert harness.kafka.written == []
    assert harness.acked == []
    assert harness.metric("attribution_fenced_flushes_total", stage="visitors") == 1

    harness.lease.holding = True
    assert asyncio.run(processor.flush())
    assert harness.acked == ["e-0", "e-1", "e-2"]


def test_a_revoked_processor_discards_what_it_did_not_save_and_writes_nothing_more() -> None:
    harness = Harness()
    processor = harness.processor
    partition = submit(processor, "e", *clicks_then_identify("v1", "c1"))

    async def revoke_then_flush() -> bool:
        await processor.close(wait_seconds=1)
        return await processor.flush()

    assert not asyncio.run(revoke_then_flush())
    assert harness.kafka.written == []
    assert harness.acked == []
    assert not processor.owns(partition)
    _, late = next(visitor_items(click("x", at(3), "v1", "anna")))
    assert not processor.submit("late", partition, [late])


def test_a_processor_takes_no_event_of_a_partition_outside_its_assignment() -> None:
    partition, item = next(visitor_items(click("k1", at(0), "v1", "anna")))
    others = tuple(p for p in range(PARTITIONS) if p != partition)
    harness = Harness(partitions=others)
    assert not harness.processor.submit("e", partition, [item])
    assert asyncio.run(harness.processor.flush())
    assert harness.kafka.written == [] and harness.acked == []


def test_revoked_while_kafka_confirms_a_flush_it_acknowledges_nothing() -> None:
    harness = Harness()
    processor = harness.processor
    submit(processor, "e", *clicks_then_identify("v1", "c1"))
    harness.kafka.gate = asyncio.Event()

    async def scenario() -> bool:
        assert harness.kafka.gate is not None
        flushing = asyncio.create_task(processor.flush())
        await asyncio.sleep(0)  # the flush is waiting for Kafka
        closing = asyncio.create_task(processor.close(wait_seconds=5))
        await asyncio.sleep(0)
        assert not closing.done()  # close waits for the flush under way
        harness.kafka.gate.set()
        await closing
        return await flushing

    assert not asyncio.run(scenario())
    assert harness.kafka.changelog_keys() == [b"v1"]  # it was written...
    assert harness.acked == []  # ...but its events are read again by the next owner


def flush_submitting_meanwhile(harness: Harness, name: str, *events: Any) -> bool:
    """Flush, and submit `events` (as `name`) while that flush waits for Kafka; whether the
    flush acknowledged."""
    gate = harness.kafka.gate = asyncio.Event()

    async def scenario() -> bool:
        flushing = asyncio.create_task(harness.processor.flush())
        await asyncio.sleep(0)
        submit(harness.processor, name, *events)
        gate.set()
        return await flushing

    return asyncio.run(scenario())


def test_states_changed_while_a_flush_awaits_go_with_the_next_flush() -> None:
    harness = Harness()
    processor = harness.processor
    submit(processor, "a", click("k1", at(0), "v1", "anna"))

    # handled while the first flush waits: reads the state being saved, not the table's
    link = event("identify", "i1", at(1), visitor_id="v1", customer_id="c1")
    assert flush_submitting_meanwhile(harness, "b", link)
    assert harness.acked == ["a-0"]
    assert asyncio.run(processor.flush())

    assert harness.acked == ["a-0", "b-0"]
    assert harness.kafka.changelog_keys() == [b"v1", b"v1"]
    assert harness.kafka.forwarded_clicks() == [["k1"]]  # the link found the click in memory


def test_the_table_holds_the_state_as_the_changelog_has_it() -> None:
    """A state changed while its flush waits for Kafka is stored as it was written, not as it
    is now: the table never runs ahead of what a restore from the changelog would give."""
    harness = Harness()
    processor = harness.processor
    submit(processor, "a", click("k1", at(0), "v1", "anna"))

    assert flush_submitting_meanwhile(harness, "b", click("k2", at(1), "v1", "bob"))
    assert harness.store.data[b"v1"] == harness.kafka.changelog()[-1][1]
    assert asyncio.run(processor.flush())

    assert harness.store.data[b"v1"] == harness.kafka.changelog()[-1][1]


def test_a_new_generation_writes_its_own_marker_and_restore_ignores_the_old_one_after_it() -> None:
    """The zombie case: generation 7 lost the partition to generation 9 but still wrote."""
    old = Harness(generation=7)
    submit(old.processor, "e", *clicks_then_identify("v1", "c1"))
    new = Harness(generation=9)
    submit(new.processor, "e", *clicks_then_identify("v1", "c1"))
    submit(new.processor, "f", click("v1-c3", at(3), "v1", "anna"))
    assert asyncio.run(new.processor.flush())
    assert asyncio.run(old.processor.flush())  # landed after the new owner's writes

    fence = ChangelogFence()
    log = new.kafka.changelog() + old.kafka.changelog()
    restored = {
        key: value
        for key, value, generation in log
        if fence.admits(0, generation) and key is not None and not is_marker(key)
    }
    assert fence.ignored == 2  # the old generation's marker and state
    assert restored[b"v1"] == new.store.data[b"v1"]


def test_expired_keys_are_deleted_with_a_tombstone_at_the_next_flush() -> None:
    harness = Harness()
    processor = harness.processor
    submit(processor, "e", click("k1", at(0), "v1", "anna"))
    # a year later another visitor comes: v1's clicks are past every retention
    submit(processor, "f", click("k2", at(400), "v2", "anna"))
    assert asyncio.run(processor.flush())

    assert processor.expire(T0 + timedelta(days=500)) == 1
    assert asyncio.run(processor.flush())
    assert harness.kafka.changelog()[-1][:2] == (b"v1", None)
    assert set(harness.store.data) == {b"v2"}


def test_a_state_the_table_was_given_meanwhile_is_the_one_used() -> None:
    """A restore from the changelog rewrites the table under a processor: between flushes the
    table is the truth, whatever a processor still holds of the state it saved."""
    harness = Harness()
    processor = harness.processor
    submit(processor, "a", click("k1", at(0), "v1", "anna"))
    assert asyncio.run(processor.flush())
    elsewhere = Harness()
    submit(elsewhere.processor, "x", click("k9", at(0), "v1", "anna"))
    assert asyncio.run(elsewhere.processor.flush())
    harness.store.save_state(b"v1", elsewhere.store.data[b"v1"], 0)

    submit(processor, "b", click("k2", at(1), "v1", "bob"))
    assert asyncio.run(processor.flush())
    assert set(harness.stored(b"v1").waiting) == {"k9", "k2"}


def test_the_next_assignment_never_sees_a_state_the_revoked_one_changed_but_did_not_save() -> None:
    harness = Harness()
    processor = harness.processor
    partition = submit(processor, "a", click("k1", at(0), "v1", "anna"))
    assert asyncio.run(processor.flush())
    submit(processor, "b", click("k2", at(1), "v1", "bob"))  # changes the state in memory
    harness.kafka.failing = True
    assert not asyncio.run(processor.flush())
    asyncio.run(processor.close(wait_seconds=1))
    harness.kafka.failing = False

    reassigned = harness.build(generation=8, partitions=(partition,))
    submit(reassigned, "c", click("k3", at(2), "v1", "carl"))
    assert asyncio.run(reassigned.flush())
    assert set(harness.stored(b"v1").waiting) == {"k1", "k3"}  # k2 comes again from Kafka


def test_a_key_deleted_by_expiry_starts_afresh() -> None:
    harness = Harness()
    processor = harness.processor
    submit(processor, "e", click("k1", at(0), "v1", "anna"))
    submit(processor, "f", click("k2", at(400), "v2", "anna"))
    assert asyncio.run(processor.flush())
    assert processor.expire(T0 + timedelta(days=500)) == 1
    assert asyncio.run(processor.flush())

    submit(processor, "g", click("k3", at(401), "v1", "anna"))
    assert asyncio.run(processor.flush())
    assert set(harness.stored(b"v1").waiting) == {"k3"}


def test_a_command_that_fails_halfway_leaves_the_state_as_it_was_saved() -> None:
    """Dead-lettered after changing the state it read from the table: the next command sees the
    table's state, not the half-done change."""

    def failing_on_a_link(
        visitor: Visitor | None, command: Any, rules: Rules
    ) -> tuple[Visitor | None, list[Any]]:
        visitor, outputs = apply_to_visitor(visitor, command, rules)
        if isinstance(command, VisitorLink) and command.customer_id == "broken":
            raise ValueError("injected: failed after changing the state")
        return visitor, outputs

    harness = Harness(stage=dataclasses.replace(VISITORS, apply=failing_on_a_link))
    processor = harness.processor
    submit(processor, "a", click("k1", at(0), "v1", "anna"))
    assert asyncio.run(processor.flush())
    broken = event("identify", "i1", at(1), visitor_id="v1", customer_id="broken")
    submit(
        processor, "b", broken, event("identify", "i2", at(2), visitor_id="v1", customer_id="c1")
    )
    assert asyncio.run(processor.flush())

    assert harness.metric("attribution_identity_conflicts_total") == 0
    assert harness.stored(b"v1").customer_id == "c1"


def test_a_state_comes_back_from_the_table_as_it_was_saved() -> None:
    """Nothing a stage's state holds is lost on its way through the table and its changelog, so
    a restored key, or one decoded again after a flush, goes on as if it had stayed in memory."""
    storefront = Storefront(datetime(2026, 6, 1, tzinfo=UTC), seed=3, influencers_count=10)
    pipeline = LocalPipeline(storefront.static_catalog(), Rules(), pii_key=b"salt")
    for raw in storefront.events(200):
        pipeline.feed(validate_event(raw))
    tables: list[tuple[Stage[Any], dict[str, Any]]] = [
        (TRAFFIC, pipeline.traffic),
        (VISITORS, pipeline.visitors),
        (LEDGERS, pipeline.ledgers),
        (JOURNEYS, pipeline.journeys),
    ]
    for stage, states in tables:
        assert states, stage.name
        for state in states.values():
            assert stage.from_wire(decode(encode(stage.to_wire(state)))) == state, stage.name
