"""sink: result rows -> ClickHouse in batches; a batch is acknowledged only once stored."""

from __future__ import annotations

import logging
from typing import Any

from streams.app import Topology
from streams.codecs import decode

log = logging.getLogger(__name__)


def register(topology: Topology) -> None:
    settings = topology.settings

    @topology.app.agent(topology.rows, name="clickhouse-sink")
    async def clickhouse_sink(stream: Any) -> None:
        writer = topology.clickhouse.writer()
        async for events in stream.take_events(
            settings.sink_batch_rows, within=settings.sink_batch_seconds
        ):
            rows = [decode(event.value) for event in events]
            # take_events acknowledges the batch when this loop body ends, even on error,
            # so the write retries here until it succeeds or the worker is stopping.
            stored = await writer.write(rows, should_stop=lambda: stream.should_stop)
            if not stored:
                raise RuntimeError("worker stopping with an unwritten ClickHouse batch")
