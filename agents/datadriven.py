"""datadriven: the worker owning ClickHouse writes journey paths, computes the model weights and
credits orders under `markov` and `shapley` (sinks/datadriven.py; docs/models.md).

One timer does it all, so the passes never overlap: every tick writes the paths that closed and
credits the orders that changed. The weights are computed when paths were written since the last
computation (or at the first tick): at once while no version exists, so orders are split by real
weights as soon as there are paths, then at most every `weights_interval_seconds`. Reads and
writes go through the sink's ClickHouse writer, on its thread; the sink of a worker started with
`data_driven` off runs none of it (one worker per ClickHouse server must).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from sinks.datadriven import DataDrivenSink
from streams.app import Topology

log = logging.getLogger(__name__)


def register(topology: Topology) -> None:
    settings = topology.settings
    if not settings.data_driven:
        return
    passes: DataDrivenSink | None = None
    weights_due = 0.0  # monotonic time after which the weights may be computed again
    # Whether paths were written since the weights were last computed; unknown at the start.
    paths_written = True

    async def data_driven_models() -> None:
        nonlocal passes, weights_due, paths_written
        writer = topology.clickhouse.writer()
        if passes is None:
            passes = DataDrivenSink(
                writer,
                settings.rules,
                timedelta(days=settings.weights_window_days),
                timedelta(days=settings.weights_reweigh_days),
            )
        now = datetime.now(UTC)
        watermark = await writer.call(passes.watermark, now)
        if watermark is None:
            return
        if await passes.write_closed_paths(watermark):
            paths_written = True
        current, pages = await writer.call(passes.orders_to_credit, watermark)
        for page in pages:
            if await writer.call(passes.credit_page, page, current, watermark):
                paths_written = True
        if not paths_written:
            return
        current = await writer.call(passes.current_weights)
        if current.version == 0 or time.monotonic() >= weights_due:
            await passes.compute_weights(watermark, now)
            paths_written = False
            weights_due = time.monotonic() + settings.weights_interval_seconds

    async def tick() -> None:
        try:
            await data_driven_models()
        except Exception:  # the next tick tries again; every pass can be repeated
            log.exception("data-driven models not updated")

    topology.app.timer(interval=settings.data_driven_interval_seconds, name="data-driven-models")(
        tick
    )
