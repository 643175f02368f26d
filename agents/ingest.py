"""ingest: raw storefront events -> typed commands by visitor and order, raw rows, dead letters."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from agents.batches import pending_events
from agents.emit import send_dead_letter, send_order_command, send_rows, send_visitor_command
from attribution.routing import route_event
from schemas.events import InvalidEvent, decode_event
from sinks.catalog_store import catalog_rows
from streams.app import Topology

log = logging.getLogger(__name__)


async def _nothing_to_save() -> bool:
    return True


async def _ingest_one(topology: Topology, raw: bytes) -> None:
    try:
        parsed = decode_event(raw)
    except InvalidEvent as error:
        await send_dead_letter(topology, payload=raw, field=error.field, reason=error.message)
        return
    topology.metrics.events_valid.labels(parsed.type).inc()
    routed = route_event(parsed, topology.catalog.catalog, topology.settings.pii_key)
    for visitor_command in routed.to_visitors:
        await send_visitor_command(topology, visitor_command)
    for order_command in routed.to_orders:
        await send_order_command(topology, order_command)
    await send_rows(topology, routed.rows)


def register(topology: Topology) -> None:
    settings = topology.settings
    metrics = topology.metrics

    written_version = -1

    async def refresh_catalog() -> None:
        """Reload the catalog when a new version is published, and copy it to ClickHouse's
        dimension tables for analysts (retried on the next tick if ClickHouse refuses)."""
        nonlocal written_version
        await topology.catalog.refresh()
        catalog = topology.catalog
        if catalog.version > 0 and catalog.version != written_version:
            rows = catalog_rows(catalog.files, catalog.version, datetime.now(UTC))
            try:
                topology.clickhouse.writer().insert_now(rows)
            except Exception:
                log.exception("catalog version %d not written to ClickHouse", catalog.version)
                return
            written_version = catalog.version

    @topology.app.agent(topology.events, name="ingest")
    async def ingest(stream: Any) -> None:
        await refresh_catalog()
        async with pending_events(
            stream, settings.stage_batch_events, settings.stage_batch_seconds, _nothing_to_save
        ) as pending:
            async for event in pending.events():
                metrics.events_consumed.inc()
                await _ingest_one(topology, event.value)
                await pending.done(event)

    @topology.app.task
    async def declare_dead_letters() -> None:
        # No agent reads this topic, so Faust would not create it on its own.
        await topology.dead_letters.maybe_declare()

    topology.app.timer(interval=settings.catalog_refresh_seconds, name="refresh-catalog")(
        refresh_catalog
    )
