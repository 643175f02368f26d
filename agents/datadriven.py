"""datadriven: the worker owning ClickHouse writes journey paths, computes the model weights and
credits orders under `markov` and `shapley` (sinks/datadriven.py; docs/models.md).

One timer does it all, so the passes never overlap: every tick writes the paths that closed and
credits the orders that changed, a page at a time. Live traffic comes first: the pass shares the
cores with the stages, so after each page it stops crediting for the tick while the oldest
credit of the sink's latest save waited longer than `data_driven_yield_seconds`
(`LiveLatency`); the rest waits for a tick with room, so a backlog is caught up later but never
starved (a page every tick). Paths and weights do not give way: the path pass reads and writes
at most a week of clicks, and the weights are computed at most hourly once a version exists.

The weights are computed when paths were written since the last computation (or at the first
tick): at once while no version exists, so orders are split by real weights as soon as there
are paths, then at most every `weights_interval_seconds`. Reads and writes go through the sink's
ClickHouse writer, on its thread; the sink of a worker started with `data_driven` off runs none
of it (one worker per ClickHouse server must).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sinks.datadriven import DataDrivenSink
from streams.app import ClickHouseHandle, Topology
from streams.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)

# A save older than this says nothing about live traffic now: rows stopped coming.
LIVE_SAVE_SECONDS = 2.0


@dataclass
class LiveLatency:
    """How long the oldest credit of the sink's latest save waited since its event reached
    Kafka: the live traffic's own measure, which the data-driven pass gives way to."""

    stored_at: float = 0.0
    waited: float = 0.0

    def saved(self, stored_at: float, oldest_origin: float) -> None:
        self.stored_at = stored_at
        self.waited = stored_at - oldest_origin

    def behind(self, now: float, budget: float) -> bool:
        """Whether live credits are waiting longer than `budget` (a save of the last
        LIVE_SAVE_SECONDS says so); with no recent save there is no live traffic to wait."""
        return now - self.stored_at <= LIVE_SAVE_SECONDS and self.waited > budget


@dataclass
class DataDrivenTicks:
    """What the timer runs: one pass a tick, its state kept between ticks."""

    settings: Settings
    clickhouse: ClickHouseHandle
    metrics: Metrics
    live: LiveLatency
    passes: DataDrivenSink | None = None
    weights_due: float = 0.0  # monotonic time after which the weights may be computed again
    # Whether paths were written since the weights were last computed; unknown at the start.
    paths_written: bool = True

    async def tick(self) -> None:
        """One pass; a failure is logged and counted (`AttributionDataDrivenFailing` alerts on
        it), and the next tick tries again: every pass can be repeated."""
        try:
            await self.data_driven_models()
        except Exception:
            self.metrics.data_driven_failures.inc()
            log.exception("data-driven models not updated")

    async def data_driven_models(self) -> None:
        settings = self.settings
        writer = self.clickhouse.writer()
        if self.passes is None:
            self.passes = DataDrivenSink(
                writer,
                settings.rules,
                timedelta(days=settings.weights_window_days),
                timedelta(days=settings.weights_reweigh_days),
            )
        passes = self.passes
        now = datetime.now(UTC)
        watermark = await writer.call(passes.watermark, now)
        if watermark is None:
            return
        if await passes.write_closed_paths(watermark):
            self.paths_written = True
        credited, gave_way = await passes.credit_orders(
            watermark, lambda: self.live.behind(time.time(), settings.data_driven_yield_seconds)
        )
        if gave_way:
            self.metrics.data_driven_yields.inc()
        if credited:
            self.paths_written = True
        if not self.paths_written:
            return
        current = await writer.call(passes.current_weights)
        if current.version == 0 or time.monotonic() >= self.weights_due:
            await passes.compute_weights(watermark, now)
            self.paths_written = False
            self.weights_due = time.monotonic() + settings.weights_interval_seconds


def register(topology: Topology, live: LiveLatency) -> None:
    settings = topology.settings
    if not settings.data_driven:
        return
    ticks = DataDrivenTicks(settings, topology.clickhouse, topology.metrics, live)
    topology.app.timer(interval=settings.data_driven_interval_seconds, name="data-driven-models")(
        ticks.tick
    )
