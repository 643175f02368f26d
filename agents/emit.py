"""Sending the core's outputs to their topics.

Every command and row is sent with the record timestamp of the (oldest) storefront event
behind it, so that event's arrival time in Kafka travels with everything it causes and the
latency histograms measure end to end.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from aiokafka.partitioner import murmur2
from faust import current_event

from attribution.messages import (
    JourneyCommand,
    OrderCommand,
    VisitorCommand,
    Wire,
    command_to_wire,
    customer_key,
    order_key,
)
from attribution.privacy import scrub_personal_data, scrub_personal_text
from attribution.rows import Rejection, Row
from streams.app import Topology
from streams.codecs import encode
from streams.metrics import field_label, type_label

log = logging.getLogger(__name__)


def origin_timestamp() -> float | None:
    """When the storefront event behind the event being processed reached Kafka (seconds)."""
    event = current_event()
    return None if event is None else event.message.timestamp


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Outbox:
    """What an agent produced since its last flush, sent by that flush as few records.

    Rows go to `rows` as JSON arrays. Commands go to their stage's topic grouped by the
    partition their key hashes to, each record an array of `{"key", "command"}` sent to that
    partition, so a stage still finds every key of a partition in that partition. A record
    holds up to `ITEMS_PER_RECORD` items: each record costs Faust the same whatever its size,
    and per-record work is where a worker's time goes. A record carries the timestamp of the
    oldest event behind it, so latency measured from it errs on the long side.
    """

    ITEMS_PER_RECORD = 500

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._rows: list[Wire] = []
        self._commands: dict[tuple[Any, int], list[Wire]] = {}
        self._oldest_origin: float | None = None

    def _note_origin(self) -> None:
        origin = origin_timestamp()
        if origin is not None and (self._oldest_origin is None or origin < self._oldest_origin):
            self._oldest_origin = origin

    def rows(self, rows: list[Row]) -> None:
        if rows:
            self._rows.extend(row.to_wire() for row in rows)
            self._note_origin()

    def _command(self, topic: Any, key: str, command: Any) -> None:
        partition = key_partition(key.encode(), self._topology.settings.partitions)
        item = {"key": key, "command": command_to_wire(command)}
        self._commands.setdefault((topic, partition), []).append(item)
        self._note_origin()

    def visitor_command(self, command: VisitorCommand) -> None:
        self._command(self._topology.visitor_commands, command.visitor_id, command)

    def order_command(self, command: OrderCommand) -> None:
        self._command(self._topology.order_commands, order_key(command), command)

    def journey_command(self, command: JourneyCommand) -> None:
        self._command(self._topology.journey_commands, customer_key(command), command)

    async def send(self) -> bool:
        """Send what was added so far; what is added while it awaits waits for the next call."""
        rows, commands, origin = self._rows, self._commands, self._oldest_origin
        self._rows, self._commands, self._oldest_origin = [], {}, None
        batches = [(self._topology.rows, None, rows)] + [
            (topic, partition, items) for (topic, partition), items in commands.items()
        ]
        for topic, partition, items in batches:
            for start in range(0, len(items), self.ITEMS_PER_RECORD):
                chunk = items[start : start + self.ITEMS_PER_RECORD]
                await topic.send(value=encode(chunk), partition=partition, timestamp=origin)
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


async def send_dead_letter(
    topology: Topology,
    *,
    payload: bytes | dict[str, Any],
    field: str,
    reason: str,
    event_id: str = "",
) -> None:
    """An invalid event with its payload (personal fields hashed), the reason and when it
    was refused."""
    document = _parsed(payload)
    event_id = event_id or _claimed_event_id(document)
    record: dict[str, Any] = {
        "event_id": event_id,
        "field": field,
        "reason": reason,
        "dead_lettered_at": datetime.now(UTC).isoformat(),
    }
    # Dead letters are kept for weeks and read by people: personal fields only as keyed hashes.
    key = topology.settings.pii_key
    if isinstance(payload, bytes) and document is None:
        record["payload"] = scrub_personal_text(payload, key).decode("utf-8", errors="replace")
    else:
        record["payload"] = scrub_personal_data(document, key)
    log.warning(
        "dead letter event_id=%s field=%s reason=%s",
        event_id,
        field,
        reason,
        extra={"event_id": event_id},
    )
    topology.metrics.dead_letters.labels(type_label(document), field_label(field)).inc()
    await topology.dead_letters.send(value=encode(record))


async def send_rejection(topology: Topology, rejection: Rejection) -> None:
    await send_dead_letter(
        topology,
        payload=rejection.payload,
        field=rejection.field,
        reason=rejection.reason,
        event_id=rejection.event_id,
    )
