"""datadriven: the worker owning ClickHouse writes journey paths, computes the model weights and
credits orders under `markov` and `shapley` (sinks/datadriven.py; docs/models.md).

One timer does it all, so the passes never overlap: every tick credits the orders that changed
and writes the paths that closed; the weights are computed on the first tick and then every
`weights_interval_seconds`. The passes read and write through the sink's ClickHouse writer,
on its thread.
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
    passes: DataDrivenSink | None = None
    weights_due = 0.0  # monotonic time of the next weights computation; 0: at the first tick

    def tick() -> None:
        nonlocal passes, weights_due
        if passes is None:
            passes = DataDrivenSink(
                topology.clickhouse.writer(),
                settings.rules,
                timedelta(days=settings.weights_window_days),
                timedelta(days=settings.weights_restatement_days),
            )
        now = datetime.now(UTC)
        watermark = passes.watermark(now)
        if watermark is None:
            return
        if time.monotonic() >= weights_due:
            passes.compute_weights(watermark, now)
            weights_due = time.monotonic() + settings.weights_interval_seconds
        passes.write_closed_paths(watermark)
        passes.credit_orders(watermark)

    async def data_driven_models() -> None:
        try:
            await topology.clickhouse.writer().call(tick)
        except Exception:  # the next tick tries again; every pass can be repeated
            log.exception("data-driven models not updated")

    topology.app.timer(interval=settings.data_driven_interval_seconds, name="data-driven-models")(
        data_driven_models
    )
