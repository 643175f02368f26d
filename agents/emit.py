"""Sending the core's outputs to their topics.

Every command and row is sent with the record timestamp of the event being processed, so
the storefront event's arrival time in Kafka travels with everything it causes and the
latency histograms measure end to end.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

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


class RowsOutbox:
    """Rows an agent produced since its last flush, sent by that flush as few records.

    A `rows` record is a JSON array of up to `ROWS_PER_RECORD` rows: most of the records a
    worker would read are rows, and each record costs Faust the same whatever its size. The
    record carries the timestamp of the oldest event behind its rows, so latency measured
    from it errs on the long side.
    """

    ROWS_PER_RECORD = 500

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._rows: list[Wire] = []
        self._oldest_origin: float | None = None

    def add(self, rows: list[Row]) -> None:
        if not rows:
            return
        self._rows.extend(row.to_wire() for row in rows)
        origin = origin_timestamp()
        if origin is not None and (self._oldest_origin is None or origin < self._oldest_origin):
            self._oldest_origin = origin

    async def send(self) -> bool:
        """Send what was added so far; rows added while it awaits wait for the next call."""
        rows, origin = self._rows, self._oldest_origin
        self._rows, self._oldest_origin = [], None
        for start in range(0, len(rows), self.ROWS_PER_RECORD):
            chunk = rows[start : start + self.ROWS_PER_RECORD]
            await self._topology.rows.send(value=encode(chunk), timestamp=origin)
        return True


async def send_visitor_command(topology: Topology, command: VisitorCommand) -> None:
    await topology.visitor_commands.send(
        key=command.visitor_id.encode(),
        value=encode(command_to_wire(command)),
        timestamp=origin_timestamp(),
    )


async def send_order_command(topology: Topology, command: OrderCommand) -> None:
    await topology.order_commands.send(
        key=order_key(command).encode(),
        value=encode(command_to_wire(command)),
        timestamp=origin_timestamp(),
    )


async def send_journey_command(topology: Topology, command: JourneyCommand) -> None:
    await topology.journey_commands.send(
        key=customer_key(command).encode(),
        value=encode(command_to_wire(command)),
        timestamp=origin_timestamp(),
    )


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
