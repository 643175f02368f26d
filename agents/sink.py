"""sink: result rows -> ClickHouse in batches; rows are acknowledged only once stored."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from agents import datadriven
from agents.batches import pending_events
from streams.app import Topology
from streams.codecs import decode

log = logging.getLogger(__name__)


def register(topology: Topology) -> None:
    settings = topology.settings
    metrics = topology.metrics
    # The data-driven models are credited from what this worker stored (docs/models.md).
    datadriven.register(topology)

    @topology.app.agent(topology.rows, name="clickhouse-sink")
    async def clickhouse_sink(stream: Any) -> None:
        writer = topology.clickhouse.writer()
        rows: list[dict[str, Any]] = []
        # When the event behind each held credit row reached Kafka (record timestamps).
        credit_origins: list[float] = []
        failing = False

        async def save() -> bool:
            """Insert the held rows; while ClickHouse refuses them, nothing is acknowledged
            and the agent stops reading once a batch is full, so Kafka lag grows instead."""
            nonlocal failing
            if not rows:
                return True
            # Taken before the insert awaits: rows read meanwhile go with the next save.
            batch, origins = list(rows), list(credit_origins)
            rows.clear()
            credit_origins.clear()
            if failing:
                metrics.sink_retries.inc()
            try:
                with metrics.sink_batch_seconds.time():
                    await writer.insert(batch)  # on the writer's thread, off the event loop
            except Exception:
                rows[:0] = batch
                credit_origins[:0] = origins
                failing = True
                metrics.sink_failures.inc()
                log.exception("ClickHouse insert of %d rows failed; will retry", len(batch))
                return False
            failing = False
            stored_at = time.time()
            for origin in origins:
                metrics.credit_stored_latency.observe(stored_at - origin)
            metrics.sink_batch_rows.observe(len(batch))
            for table, count in Counter(row["table"] for row in batch).items():
                metrics.sink_rows.labels(table).inc(count)
            return True

        async with pending_events(
            stream, settings.sink_batch_rows, settings.sink_batch_seconds, save
        ) as pending:
            async for event in pending.events():
                record = decode(event.value)
                # A record holds an array of rows; before 2026-11-24 it held one row.
                batch = record if isinstance(record, list) else [record]
                rows.extend(batch)
                credits = sum(1 for row in batch if row["table"] == "credits")
                credit_origins.extend([event.message.timestamp] * credits)
                await pending.done(event, len(batch))
