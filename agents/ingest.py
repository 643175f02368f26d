"""ingest: raw storefront events -> typed commands by visitor and order, raw rows, dead letters."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from agents.batches import pending_events
from agents.emit import Outbox, send_dead_letter
from attribution.lateness import LatenessTracker
from attribution.routing import route_event
from attribution.rows import ClickClassificationRow
from schemas.events import Event, RefusedEvent, decode_record
from streams.app import Topology

log = logging.getLogger(__name__)


async def _ingest_record(
    topology: Topology, raw: bytes, outbox: Outbox, lateness: LatenessTracker
) -> int:
    """Route the events of one record (one event or an array of them); return how many."""
    decoded = decode_record(raw)
    for item in decoded:
        if isinstance(item, RefusedEvent):
            await send_dead_letter(
                topology, payload=item.payload, field=item.error.field, reason=item.error.message
            )
        else:
            _route(topology, item, outbox, lateness)
    return len(decoded)


def _route(topology: Topology, parsed: Event, outbox: Outbox, lateness: LatenessTracker) -> None:
    topology.metrics.events_valid.labels(parsed.type).inc()
    if lateness.observe(parsed.occurred_at, datetime.now(UTC)):
        topology.metrics.late_events.labels(parsed.type).inc()
    routed = route_event(parsed, topology.catalog.catalog, topology.settings.pii_key)
    outbox.routed_commands(routed)
    for row in routed.rows:
        if isinstance(row, ClickClassificationRow):
            topology.metrics.count_classification(row.status, row.reasons)
    outbox.rows(routed.rows)


def register(topology: Topology) -> None:
    settings = topology.settings
    metrics = topology.metrics

    @topology.app.agent(topology.events, name="ingest")
    async def ingest(stream: Any) -> None:
        await topology.catalog.refresh()
        outbox = Outbox(topology)
        lateness = LatenessTracker(settings.rules.allowed_lateness)
        async with pending_events(
            stream, settings.stage_batch_events, settings.stage_batch_seconds, outbox.send
        ) as pending:
            async for event in pending.events():
                events = await _ingest_record(topology, event.value, outbox, lateness)
                metrics.events_consumed.inc(events)
                await pending.done(event, units=events)

    @topology.app.task  # type: ignore[untyped-decorator]
    async def declare_dead_letters() -> None:
        # No agent reads this topic, so Faust would not create it on its own.
        await topology.dead_letters.maybe_declare()
