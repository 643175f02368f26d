"""ingest: raw storefront events -> typed commands by visitor and order, raw rows, dead letters."""

from __future__ import annotations

from typing import Any

from agents.emit import send_dead_letter, send_order_command, send_rows, send_visitor_command
from attribution.routing import route_event
from schemas.events import InvalidEvent, decode_event
from streams.app import Topology


def register(topology: Topology) -> None:
    settings = topology.settings

    @topology.app.agent(topology.events, name="ingest")
    async def ingest(stream: Any) -> None:
        await topology.catalog.refresh()
        async for events in stream.take_events(
            settings.stage_batch_events, within=settings.stage_batch_seconds
        ):
            for event in events:
                raw: bytes = event.value
                try:
                    parsed = decode_event(raw)
                except InvalidEvent as error:
                    await send_dead_letter(
                        topology, payload=raw, field=error.field, reason=error.message
                    )
                    continue
                routed = route_event(parsed, topology.catalog.catalog)
                for visitor_command in routed.to_visitors:
                    await send_visitor_command(topology, visitor_command)
                for order_command in routed.to_orders:
                    await send_order_command(topology, order_command)
                await send_rows(topology, routed.rows)

    @topology.app.task
    async def declare_dead_letters() -> None:
        # No agent reads this topic, so Faust would not create it on its own.
        await topology.dead_letters.maybe_declare()

    @topology.app.timer(interval=settings.catalog_refresh_seconds)
    async def refresh_catalog() -> None:
        await topology.catalog.refresh()
