"""The streaming pipeline on real Kafka and embedded ClickHouse ends with the replay's credits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from schemas.catalog import read_catalog_dir
from simulation.storefront import Storefront
from sinks.catalog_store import publish_catalog
from streams.backfill import load_history
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.helpers import (
    EXAMPLES,
    feed,
    publish_storefront,
    replay_credits,
    wait_for_credits,
)

pytestmark = pytest.mark.integration


def test_example_scenario_streams_to_the_replay_credits(worker: WorkerProcess) -> None:
    settings = worker.settings
    version = publish_catalog(
        settings.redis_url, settings.topic_prefix, read_catalog_dir(EXAMPLES / "catalog")
    )
    lines = (EXAMPLES / "events.jsonl").read_bytes().splitlines()
    expected = replay_credits(lines, EXAMPLES / "catalog", settings)
    assert {row[0] for row in expected} == {"1001", "1002", "1003"}

    worker.wait_for_catalog(version)
    feed(settings, lines)

    assert wait_for_credits(worker, expected) == expected
    refunded = worker.sql("SELECT order_id, toString(refunded) FROM orders FINAL ORDER BY order_id")
    assert [(r[0], Decimal(str(r[1]))) for r in refunded] == [
        ("1001", Decimal(25)),
        ("1002", Decimal(3000)),
        ("1003", Decimal(0)),
    ]


@pytest.mark.long
def test_storefront_stream_survives_a_restart_and_matches_replay(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings
    storefront = Storefront(datetime(2026, 5, 1, tzinfo=UTC), seed=11)
    history, live = storefront.split_history(storefront.events(1500))
    catalog_dir, version, lines = publish_storefront(settings, storefront, tmp_path, live)
    earlier = [json.dumps(event).encode() for event in history]
    expected = replay_credits([*earlier, *lines], catalog_dir, settings)
    half = len(lines) // 2

    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_for_catalog(version)
        load_history(settings, earlier)
        feed(settings, lines[:half])
        # Stop only once the first half is fully attributed, so the second run must rely on
        # the tables it restores from their changelogs.
        first_half = replay_credits([*earlier, *lines[:half]], catalog_dir, settings)
        assert wait_for_credits(worker, first_half) == first_half
        assert worker.stop() == 0
        # The storefront keeps sending while the worker is down; on start the worker restores
        # its tables from their changelogs and works through the backlog.
        feed(settings, lines[half:])
        worker.start()
        actual = wait_for_credits(worker, expected)
    finally:
        worker.stop()
    assert len(expected) > 1000
    assert actual == expected
