"""`attribution backfill`: a history of months, in no particular order, loaded into a running
worker through Kafka ends with the credits of the replay, and loading it again changes nothing."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.catalog import read_catalog_dir
from simulation.storefront import Storefront
from sinks.catalog_store import publish_catalog
from streams.backfill import STAGE_INPUTS, unconsumed
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.worker_process import WorkerProcess
from tests.integration.helpers import (
    EXAMPLES,
    click,
    dead_letters,
    feed,
    publish_storefront,
    replay_credits,
    wait_for_credits,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

TOTALS_SQL = "SELECT count(), toString(sum(net_revenue)) FROM orders FINAL"


def _backfill(worker: WorkerProcess, history: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "backfill", str(history)],
        env=worker.settings.as_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stderr


def test_records_no_worker_has_committed_count_as_unconsumed(isolated_settings: Settings) -> None:
    """What the backfill waits on between windows: records the group has not committed."""
    settings = isolated_settings
    asyncio.run(ensure_topics(settings))
    feed(settings, [json.dumps({"n": n}).encode() for n in range(10)])

    assert asyncio.run(unconsumed(settings, settings.app_id, ["events"])) == 10
    assert asyncio.run(unconsumed(settings, settings.app_id, STAGE_INPUTS)) == 10


@pytest.mark.long
def test_a_shuffled_history_backfills_to_the_replay_credits_and_a_rerun_changes_nothing(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    settings = worker.settings
    storefront = Storefront(
        datetime(2026, 5, 1, tzinfo=UTC), seed=31, influencers_count=8, sparse_share=0.4
    )
    events = storefront.events(150, spread=timedelta(days=45))
    catalog_dir, version, lines = publish_storefront(settings, storefront, tmp_path, events)
    by_event_time = sorted(lines, key=lambda line: json.loads(line)["occurred_at"])
    expected = replay_credits(by_event_time, catalog_dir, settings)
    shuffled = [*lines, b'{"type": "click", "event_id": "no-time"}']
    random.Random(5).shuffle(shuffled)
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"\n".join(shuffled) + b"\n")
    worker.wait_for_catalog(version)

    report = _backfill(worker, history)
    first = wait_for_credits(worker, expected)
    totals = worker.sql(TOTALS_SQL)
    _backfill(worker, history)
    # The second run's rows reach ClickHouse too before its totals are read.
    wait_until(
        lambda: asyncio.run(unconsumed(settings, settings.app_id, ["rows"])) == 0,
        timeout=60,
        what="the sink to store the rows of the second backfill",
    )
    second = wait_for_credits(worker, expected)

    assert len(expected) > 500
    assert first == expected
    assert "window 1/" in report and "1 invalid lines" in report
    assert second == expected
    assert worker.sql(TOTALS_SQL) == totals
    assert any(letter.get("event_id") == "no-time" for letter in dead_letters(settings, 1))


def test_an_event_later_than_the_allowed_lateness_is_applied_and_counted(
    worker: WorkerProcess,
) -> None:
    """A click 20 days older than what the worker saw (lateness 14 days) is still credited."""
    settings = worker.settings
    version = publish_catalog(
        settings.redis_url, settings.topic_prefix, read_catalog_dir(EXAMPLES / "catalog")
    )
    worker.wait_for_catalog(version)
    in_time = click(
        "in-time", occurred_at="2026-03-21T10:00:00Z", customer_id="cu1", visitor_id="v2"
    )
    late = [
        click("late", occurred_at="2026-03-01T10:00:00Z", customer_id="cu1"),
        {
            "type": "order",
            "event_id": "o",
            "occurred_at": "2026-03-02T10:00:00Z",
            "order_id": "O1",
            "customer_id": "cu1",
            "currency": "USD",
            "total": "40.00",
        },
    ]
    # The newer click first, on its own: events of one feed may be read in any order.
    feed(settings, [json.dumps(in_time).encode()])
    wait_until(
        lambda: worker.sql("SELECT count() FROM clicks") == [[1]],
        timeout=60,
        what="the newer click stored",
    )
    feed(settings, [json.dumps(event).encode() for event in late])

    linear_sql = "SELECT touchpoint_event_id FROM credits FINAL WHERE model = 'linear'"
    wait_until(
        lambda: worker.sql(linear_sql) == [["late"]],
        timeout=60,
        what="the order credited to the late click",
    )
    assert worker.metric("attribution_late_events_total", type="click") == 1
    assert worker.metric("attribution_late_events_total", type="order") == 1
