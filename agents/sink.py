"""sink: result rows -> ClickHouse in batches; rows are acknowledged only once stored."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from agents import datadriven
from agents.batches import pending_events
from attribution.rows import RowBlock
from streams.app import Topology
from streams.codecs import decode_row_record

log = logging.getLogger(__name__)


def register(topology: Topology) -> None:
    settings = topology.settings
    metrics = topology.metrics
    # The data-driven models are credited from what this worker stored (docs/models.md), and
    # give way while the credits it stores wait too long.
    live = datadriven.LiveLatency()
    datadriven.register(topology, live)

    @topology.app.agent(topology.rows, name="clickhouse-sink")
    async def clickhouse_sink(stream: Any) -> None:
        writer = topology.clickhouse.writer()
        blocks: list[RowBlock] = []
        held_rows = 0
        # When the event behind each held credit row reached Kafka (record timestamps).
        credit_origins: list[float] = []
        failing = False

        async def save() -> bool:
            """Insert the held rows; while ClickHouse refuses them, nothing is acknowledged
            and the agent stops reading once a batch is full, so Kafka lag grows instead."""
            nonlocal failing, held_rows
            if not blocks:
                return True
            # Taken before the insert awaits: rows read meanwhile go with the next save.
            batch, origins, batch_rows = list(blocks), list(credit_origins), held_rows
            blocks.clear()
            credit_origins.clear()
            held_rows = 0
            if failing:
                metrics.sink_retries.inc()
            try:
                with metrics.sink_batch_seconds.time():
                    await writer.insert_blocks(batch)  # on the writer's thread
            except Exception:
                blocks[:0] = batch
                credit_origins[:0] = origins
                held_rows += batch_rows
                failing = True
                metrics.sink_failures.inc()
                log.exception("ClickHouse insert of %d rows failed; will retry", batch_rows)
                return False
            failing = False
            stored_at = time.time()
            for origin in origins:
                metrics.credit_stored_latency.observe(stored_at - origin)
            if origins:
                live.saved(stored_at, min(origins))
            metrics.sink_batch_rows.observe(batch_rows)
            by_table: Counter[str] = Counter()
            for block in batch:
                by_table[block.table] += len(block.rows)
            for table, count in by_table.items():
                metrics.sink_rows.labels(table).inc(count)
            return True

        async with pending_events(
            stream, settings.sink_batch_rows, settings.sink_batch_seconds, save
        ) as pending:
            async for event in pending.events():
                record = decode_row_record(event.value)
                blocks.extend(record)
                rows = sum(len(block.rows) for block in record)
                held_rows += rows
                credits = sum(len(block.rows) for block in record if block.table == "credits")
                credit_origins.extend([event.message.timestamp] * credits)
                await pending.done(event, rows)
