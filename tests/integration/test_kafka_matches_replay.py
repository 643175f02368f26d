"""The streaming pipeline on real Kafka and embedded ClickHouse ends with the replay's credits."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from attribution.replay import LocalPipeline
from schemas.catalog import read_catalog_dir
from schemas.events import InvalidEvent, decode_event
from simulation.storefront import Storefront
from sinks.catalog_store import publish_catalog, to_static_catalog
from streams.producer import produce_events
from streams.settings import Settings
from streams.worker_process import WorkerProcess

EXAMPLES = Path(__file__).parents[2] / "examples"
FINAL_CREDITS_SQL = """
    SELECT order_id, model, touchpoint_event_id, influencer_id, campaign_id,
           toString(credit), toString(revenue_credit), currency
    FROM credits FINAL
"""
Credit = tuple[str, str, str, str, str, Decimal, Decimal, str]


def replay_credits(lines: list[bytes], catalog_dir: Path, settings: Settings) -> set[Credit]:
    pipeline = LocalPipeline(to_static_catalog(read_catalog_dir(catalog_dir)), settings.rules)
    for line in lines:
        try:
            pipeline.feed(decode_event(line))
        except InvalidEvent:
            continue
    return {
        (
            row.order_id,
            row.model,
            row.touchpoint_event_id,
            row.influencer_id,
            row.campaign_id,
            row.credit,
            row.revenue_credit,
            row.currency,
        )
        for row in pipeline.final_credits()
    }


def clickhouse_credits(worker: WorkerProcess) -> set[Credit]:
    return {
        (
            str(r[0]),
            str(r[1]),
            str(r[2]),
            str(r[3]),
            str(r[4]),
            Decimal(str(r[5])),
            Decimal(str(r[6])),
            str(r[7]),
        )
        for r in worker.sql(FINAL_CREDITS_SQL)
    }


def wait_for_credits(
    worker: WorkerProcess, expected: set[Credit], timeout: float = 120
) -> set[Credit]:
    """Poll until ClickHouse holds exactly the expected final credits, or the timeout passes."""
    deadline = time.monotonic() + timeout
    actual: set[Credit] = set()
    while time.monotonic() < deadline:
        actual = clickhouse_credits(worker)
        if actual == expected:
            break
        time.sleep(0.5)
    return actual


def feed(settings: Settings, lines: list[bytes]) -> None:
    asyncio.run(produce_events(settings.bootstrap_servers, settings.topic("events"), lines))


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


def test_storefront_stream_survives_a_restart_and_matches_replay(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings
    storefront = Storefront(datetime(2026, 5, 1, tzinfo=UTC), seed=11)
    catalog_dir = storefront.write_catalog(tmp_path / "catalog")
    version = publish_catalog(
        settings.redis_url, settings.topic_prefix, read_catalog_dir(catalog_dir)
    )
    lines = [json.dumps(event).encode() for event in storefront.events(1500)]
    expected = replay_credits(lines, catalog_dir, settings)
    half = len(lines) // 2

    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_for_catalog(version)
        feed(settings, lines[:half])
        assert worker.stop() == 0
        worker.start()  # tables come back from their changelogs
        worker.wait_for_catalog(version)
        feed(settings, lines[half:])
        actual = wait_for_credits(worker, expected)
    finally:
        worker.stop()
    assert len(expected) > 1000
    assert actual == expected
