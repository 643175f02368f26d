"""sink: result rows -> ClickHouse in batches; rows are acknowledged only once stored."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from agents.batches import pending_events
from streams.app import Topology
from streams.codecs import decode

log = logging.getLogger(__name__)


def register(topology: Topology) -> None:
    settings = topology.settings
    metrics = topology.metrics

    @topology.app.agent(topology.rows, name="clickhouse-sink")
    async def clickhouse_sink(stream: Any) -> None:
        writer = topology.clickhouse.writer()
        rows: list[dict[str, Any]] = []

        async def save() -> bool:
            """Insert the held rows; while ClickHouse refuses them, nothing is acknowledged
            and the agent stops reading once a batch is full, so Kafka lag grows instead."""
            if not rows:
                return True
            try:
                with metrics.sink_batch_seconds.time():
                    writer.insert_now(rows)
            except Exception:
                metrics.sink_failures.inc()
                log.exception("ClickHouse insert of %d rows failed; will retry", len(rows))
                return False
            metrics.sink_batch_rows.observe(len(rows))
            for table, count in Counter(row["table"] for row in rows).items():
                metrics.sink_rows.labels(table).inc(count)
            rows.clear()
            return True

        async with pending_events(
            stream, settings.sink_batch_rows, settings.sink_batch_seconds, save
        ) as pending:
            async for event in pending.events():
                rows.append(decode(event.value))
                await pending.done(event)
