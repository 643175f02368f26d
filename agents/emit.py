"""Sending the core's outputs to their topics, and knowing that Kafka has them.

Every command and row is sent with the record timestamp of the (oldest) storefront event
behind it, so that event's arrival time in Kafka travels with everything it causes and the
latency histograms measure end to end.

Everything an agent sends at a flush goes out as Kafka record batches on the aiokafka producer
under Faust's, and the flush awaits Kafka's acknowledgement of every batch (`KafkaWriter`): a
batch Kafka refuses fails the flush, which then acknowledges nothing and keeps what it could
not send for the next attempt. A send whose future nobody awaits is a loss waiting to happen.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

from aiokafka.partitioner import murmur2

from attribution.messages import (
    JourneyCommand,
    OrderCommand,
    TrafficCommand,
    VisitorCommand,
    Wire,
    command_to_wire,
    customer_key,
    order_key,
    traffic_key,
)
from attribution.privacy import scrub_personal_data, scrub_personal_text
from attribution.rows import Rejection, Row, row_blocks
from streams.codecs import encode, encode_row_blocks
from streams.metrics import Metrics, field_label, type_label

if TYPE_CHECKING:
    from attribution.routing import Routed
    from streams.app import Topology

log = logging.getLogger(__name__)

Record = tuple[bytes | None, bytes | None]
Headers = list[tuple[str, bytes]]


def origin_timestamp() -> float | None:
    """When the storefront event behind the event being processed reached Kafka (seconds)."""
    from faust import current_event

    event = current_event()
    return None if event is None else event.message.timestamp


def encode_array(items: list[Wire]) -> bytes:
    """A record's JSON array of `{"key", "command"}` items."""
    return encode(cast(Any, items))


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key`."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class Batch:
    """Records for one topic partition, sent as one or more Kafka record batches."""

    topic: str
    partition: int
    records: list[Record]
    timestamp: float | None = None  # seconds; None: when it is sent
    headers: Headers = field(default_factory=list)


class SendFailed(Exception):
    """Kafka did not acknowledge every batch of a flush."""


class Writer(Protocol):
    async def write(self, batches: Sequence[Batch]) -> None:
        """Send the batches and wait until Kafka acknowledged all of them; `SendFailed` if it
        did not (some may have been written: whatever is sent again must be idempotent)."""


class KafkaWriter:
    """`Writer` on the aiokafka producer under Faust's app producer.

    One record batch per partition (more when a batch is full), all sent before the first is
    awaited, so a flush costs one round trip whatever it holds."""

    def __init__(self, app: Any, metrics: Metrics, topic_label: Callable[[str], str]) -> None:
        self._app = app
        self._metrics = metrics
        self._topic_label = topic_label

    async def write(self, batches: Sequence[Batch]) -> None:
        sent: list[tuple[str, asyncio.Future[Any]]] = []
        try:
            producer = self._app.producer._ensure_producer()
            for batch in batches:
                if not batch.records:
                    continue
                timestamp = None if batch.timestamp is None else int(batch.timestamp * 1000)
                builder = producer.create_batch()
                for key, value in batch.records:
                    if (
                        builder.append(
                            key=key, value=value, timestamp=timestamp, headers=batch.headers
                        )
                        is None
                    ):
                        future = await producer.send_batch(
                            builder, batch.topic, partition=batch.partition
                        )
                        sent.append((batch.topic, future))
                        builder = producer.create_batch()
                        builder.append(
                            key=key, value=value, timestamp=timestamp, headers=batch.headers
                        )
                future = await producer.send_batch(builder, batch.topic, partition=batch.partition)
                sent.append((batch.topic, future))
        except Exception as error:
            self._failed(batches[0].topic if batches else "", error)
            # What was already handed to the producer may still be written: never awaited,
            # never counted as written.
            for _, future in sent:
                future.add_done_callback(_consume_result)
            raise SendFailed(f"handing batches to the producer failed: {error!r}") from error
        results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
        failures = [
            (topic, result)
            for (topic, _), result in zip(sent, results, strict=True)
            if isinstance(result, BaseException)
        ]
        for topic, failure in failures:
            self._failed(topic, failure)
        if failures:
            raise SendFailed(
                f"Kafka did not acknowledge {len(failures)} of {len(sent)} batches: "
                f"{failures[0][1]!r}"
            )

    def _failed(self, topic: str, error: BaseException) -> None:
        self._metrics.send_failures.labels(self._topic_label(topic)).inc()
        log.error("sending a batch to %s failed: %r", topic, error)


def _consume_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(frozen=True)
class Routes:
    """Where an outbox sends: topic names, their partition count, the dead letters' key."""

    partitions: int
    rows: str
    traffic_commands: str
    visitor_commands: str
    order_commands: str
    journey_commands: str
    dead_letters: str
    pii_key: bytes = b""

    @classmethod
    def unprefixed(cls, partitions: int) -> Routes:
        """Topics named as the stages know them, without an app's prefix (no Kafka behind)."""
        return cls(
            partitions=partitions,
            rows="rows",
            traffic_commands="traffic-commands",
            visitor_commands="visitor-commands",
            order_commands="order-commands",
            journey_commands="journey-commands",
            dead_letters="dead-letters",
        )

    @classmethod
    def of(cls, topology: Topology) -> Routes:
        return cls(
            partitions=topology.settings.partitions,
            rows=topology.rows.get_topic_name(),
            traffic_commands=topology.traffic_commands.get_topic_name(),
            visitor_commands=topology.visitor_commands.get_topic_name(),
            order_commands=topology.order_commands.get_topic_name(),
            journey_commands=topology.journey_commands.get_topic_name(),
            dead_letters=topology.dead_letters.get_topic_name(),
            pii_key=topology.settings.pii_key,
        )


def kafka_writer(topology: Topology) -> KafkaWriter:
    settings = topology.settings
    prefixes = (settings.topic_prefix + ".", topology.app.conf.id + "-")

    def label(topic: str) -> str:
        for prefix in prefixes:
            if topic.startswith(prefix):
                return topic[len(prefix) :]
        return "other"

    return KafkaWriter(topology.app, topology.metrics, label)


class Outbox:
    """What an agent produced since its last flush, sent by that flush as few records.

    Rows go to `rows` as blocks of rows per table (`streams.codecs.encode_row_blocks`).
    Commands go to their stage's topic grouped by the partition their key hashes to, each
    record an array of `{"key", "command"}` sent to that partition, so a stage still finds
    every key of a partition in that partition. A record holds up to `ITEMS_PER_RECORD` items:
    each record costs Faust the same whatever its size, and per-record work is where a worker's
    time goes. A record carries the timestamp of the
    oldest event behind it, so latency measured from it errs on the long side.

    `take` hands over what was added as batches and `put_back` returns batches Kafka did not
    take, to go first in the next `take`; `send` does both around a `Writer`.
    """

    ITEMS_PER_RECORD = 500

    def __init__(self, topology: Topology | Routes, writer: Writer | None = None) -> None:
        if isinstance(topology, Routes):
            self._routes = topology
            self._writer = writer
        else:
            self._routes = Routes.of(topology)
            self._writer = writer or kafka_writer(topology)
        # When the event being handled reached Kafka; a processor sets its own.
        self.origin: Callable[[], float | None] = origin_timestamp
        self._rows: list[Row] = []
        self._commands: dict[tuple[str, int], list[Wire]] = {}
        self._dead_letters: list[bytes] = []
        self._oldest_origin: float | None = None
        self._unsent: list[Batch] = []
        self._next_rows_partition = 0

    @property
    def routes(self) -> Routes:
        return self._routes

    @property
    def empty(self) -> bool:
        return not (self._rows or self._commands or self._dead_letters or self._unsent)

    def _note_origin(self) -> None:
        origin = self.origin()
        if origin is not None and (self._oldest_origin is None or origin < self._oldest_origin):
            self._oldest_origin = origin

    def rows(self, rows: list[Row]) -> None:
        if rows:
            self._rows.extend(rows)
            self._note_origin()

    def _command(self, topic: str, key: str, command: Any) -> None:
        partition = key_partition(key.encode(), self._routes.partitions)
        item = {"key": key, "command": command_to_wire(command)}
        self._commands.setdefault((topic, partition), []).append(item)
        self._note_origin()

    def traffic_command(self, command: TrafficCommand) -> None:
        self._command(self._routes.traffic_commands, traffic_key(command), command)

    def visitor_command(self, command: VisitorCommand) -> None:
        self._command(self._routes.visitor_commands, command.visitor_id, command)

    def order_command(self, command: OrderCommand) -> None:
        self._command(self._routes.order_commands, order_key(command), command)

    def routed_commands(self, routed: Routed) -> None:
        """The commands an event was routed to, for the traffic, visitor and order stages."""
        for traffic_command in routed.to_traffic:
            self.traffic_command(traffic_command)
        for visitor_command in routed.to_visitors:
            self.visitor_command(visitor_command)
        for order_command in routed.to_orders:
            self.order_command(order_command)

    def journey_command(self, command: JourneyCommand) -> None:
        self._command(self._routes.journey_commands, customer_key(command), command)

    def dead_letter(self, record: dict[str, Any]) -> None:
        self._dead_letters.append(encode(record))

    def take(self, headers: Headers | None = None) -> list[Batch]:
        """What was added so far as batches (first those a failed send put back); what is added
        afterwards waits for the next call."""
        rows, commands, dead_letters = self._rows, self._commands, self._dead_letters
        origin, unsent = self._oldest_origin, self._unsent
        self._rows, self._commands, self._dead_letters = [], {}, []
        self._oldest_origin, self._unsent = None, []
        headers = headers or []
        batches = list(unsent)
        if rows:
            records: list[Record] = [
                (None, encode_row_blocks(row_blocks(rows[start : start + self.ITEMS_PER_RECORD])))
                for start in range(0, len(rows), self.ITEMS_PER_RECORD)
            ]
            batches.append(
                Batch(self._routes.rows, self._rows_partition(), records, origin, headers)
            )
        for (topic, partition), items in commands.items():
            records = [
                (None, encode_array(items[start : start + self.ITEMS_PER_RECORD]))
                for start in range(0, len(items), self.ITEMS_PER_RECORD)
            ]
            batches.append(Batch(topic, partition, records, origin, headers))
        if dead_letters:
            batches.append(
                Batch(
                    self._routes.dead_letters,
                    self._rows_partition(),
                    [(None, value) for value in dead_letters],
                    None,
                    headers,
                )
            )
        return batches

    def put_back(self, batches: list[Batch]) -> None:
        """Batches a writer failed to send: they go first in the next `take`."""
        self._unsent = batches + self._unsent

    def clear(self) -> None:
        self.take()

    def _rows_partition(self) -> int:
        # Rows and dead letters are keyless: spread them over the partitions in turn.
        partition = self._next_rows_partition
        self._next_rows_partition = (partition + 1) % self._routes.partitions
        return partition

    async def send(self) -> bool:
        """Send what was added so far and wait until Kafka has it; False (kept for the next
        call) if it did not take all of it. What is added while it awaits waits for the next
        call."""
        batches = self.take()
        if not batches:
            return True
        if self._writer is None:
            raise RuntimeError("an outbox without a writer cannot send")
        try:
            await self._writer.write(batches)
        except SendFailed:
            log.exception("flush failed: nothing acknowledged, will retry")
            self.put_back(batches)
            return False
        return True


def _parsed(payload: bytes | dict[str, Any]) -> Any:
    if not isinstance(payload, bytes):
        return payload
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        return None


def _claimed_event_id(document: Any) -> str:
    """The `event_id` an invalid payload carries, if it carries a usable one."""
    claimed = document.get("event_id") if isinstance(document, dict) else None
    return claimed[:128] if isinstance(claimed, str) else ""


def dead_letter_record(
    *,
    payload: bytes | dict[str, Any],
    field: str,
    reason: str,
    event_id: str = "",
    pii_key: bytes,
    metrics: Metrics,
) -> dict[str, Any]:
    """An invalid event with its payload (personal fields hashed), the reason and when it
    was refused; logged and counted."""
    document = _parsed(payload)
    event_id = event_id or _claimed_event_id(document)
    record: dict[str, Any] = {
        "event_id": event_id,
        "field": field,
        "reason": reason,
        "dead_lettered_at": datetime.now(UTC).isoformat(),
    }
    # Dead letters are kept for weeks and read by people: personal fields only as keyed hashes.
    if isinstance(payload, bytes) and document is None:
        record["payload"] = scrub_personal_text(payload, pii_key).decode("utf-8", errors="replace")
    else:
        record["payload"] = scrub_personal_data(document, pii_key)
    log.warning(
        "dead letter event_id=%s field=%s reason=%s",
        event_id,
        field,
        reason,
        extra={"event_id": event_id},
    )
    metrics.dead_letters.labels(type_label(document), field_label(field)).inc()
    return record


def rejection_record(rejection: Rejection, pii_key: bytes, metrics: Metrics) -> dict[str, Any]:
    return dead_letter_record(
        payload=rejection.payload,
        field=rejection.field,
        reason=rejection.reason,
        event_id=rejection.event_id,
        pii_key=pii_key,
        metrics=metrics,
    )


async def send_dead_letter(
    topology: Topology,
    *,
    payload: bytes | dict[str, Any],
    field: str,
    reason: str,
    event_id: str = "",
) -> None:
    """A dead letter sent at once (ingest's invalid events; the stages put theirs in their
    outbox, sent and acknowledged with the flush)."""
    record = dead_letter_record(
        payload=payload,
        field=field,
        reason=reason,
        event_id=event_id,
        pii_key=topology.settings.pii_key,
        metrics=topology.metrics,
    )
    await topology.dead_letters.send(value=encode(record))
