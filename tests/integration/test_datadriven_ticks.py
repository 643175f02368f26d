"""The data-driven timer's ticks (agents/datadriven.py): a failing pass is counted for the
`AttributionDataDrivenFailing` alert and never stops the timer; a healthy one counts nothing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from prometheus_client import CollectorRegistry

from agents.datadriven import DataDrivenTicks, LiveLatency
from streams.app import ClickHouseHandle
from streams.metrics import Metrics
from streams.settings import Settings

FAILURES = "attribution_data_driven_failures_total"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ticks(dsn: str, registry: CollectorRegistry) -> DataDrivenTicks:
    return DataDrivenTicks(Settings(), ClickHouseHandle(dsn), Metrics(registry), LiveLatency())


def test_every_failed_tick_is_counted_and_the_next_one_tries_again() -> None:
    registry = CollectorRegistry()
    ticks = _ticks(f"http://127.0.0.1:{_closed_port()}", registry)
    asyncio.run(ticks.tick())
    asyncio.run(ticks.tick())
    assert registry.get_sample_value(FAILURES) == 2


def test_a_tick_on_a_reachable_store_counts_no_failure(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    ticks = _ticks(f"chdb://{tmp_path / 'clickhouse'}", registry)
    try:
        asyncio.run(ticks.tick())
        assert registry.get_sample_value(FAILURES) == 0
        assert ticks.passes is not None, "the pass did not reach ClickHouse"
    finally:
        asyncio.run(ticks.clickhouse.writer().with_client(lambda client: client.close()))
