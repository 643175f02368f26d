"""Faults under traffic: the final state in ClickHouse still equals the replay, cent for cent.

Every test runs the same storefront scenario through a real worker while one fault happens,
then compares ClickHouse with `attribution replay` of the same events: the months of history of
customers whose visits are weeks apart (backfilled first, by event time, as a storefront does
before it goes live), then about 16k live events (identifies with cross-device visitors, code
redemptions, refunds, late and duplicate deliveries) during which the fault happens.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.catalog import read_catalog_dir
from simulation.storefront import Storefront
from sinks.catalog_store import publish_catalog
from streams.backfill import load_history
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.helpers import (
    PII_SALT,
    Credit,
    assigned_event_partitions,
    clickhouse_credits,
    events_consumed,
    feed,
    replay_credits,
    wait_for_credits,
    with_role,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SHOPPERS = 6_000
STACK = Path(__file__).parents[2] / "devstack" / "stack"


@dataclass(frozen=True)
class Scenario:
    catalog_dir: Path
    history: list[bytes]
    lines: list[bytes]
    expected: set[Credit]

    def load_history(self, worker: WorkerProcess) -> None:
        """The catalog published and the history backfilled; the live lines are still to come."""
        worker.wait_for_catalog(self.publish_catalog(worker.settings))
        load_history(worker.settings, self.history)

    def publish_catalog(self, settings: Settings) -> int:
        return publish_catalog(
            settings.redis_url, settings.topic_prefix, read_catalog_dir(self.catalog_dir)
        )

    @property
    def second_half(self) -> list[bytes]:
        return self.lines[len(self.lines) // 2 :]

    def feed_first_half(self, worker: WorkerProcess) -> None:
        """History loaded, the first half fed and a third of it consumed: a fault can start."""
        self.load_history(worker)
        first_half = self.lines[: len(self.lines) // 2]
        feed(worker.settings, first_half)
        wait_until_consumed(worker, len(self.history) + len(first_half) // 3)

    def report(self) -> str:
        cents = int(sum(c[6] for c in self.expected if c[1] == "last_click") * 100)
        return (
            f"{len(self.history)} + {len(self.lines)} events, {len(self.expected)} credit rows, "
            f"{cents} cents per model equal to the replay"
        )


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, services: None) -> Scenario:
    storefront = Storefront(datetime(2026, 5, 1, tzinfo=UTC), seed=23, sparse_share=0.02)
    catalog_dir = storefront.write_catalog(tmp_path_factory.mktemp("scenario") / "catalog")
    history, live = storefront.split_history(storefront.events(SHOPPERS))
    lines = [json.dumps(event).encode() for event in live]
    earlier = [json.dumps(event).encode() for event in history]
    assert len(lines) >= 16_000 and len(earlier) >= 2_000
    expected = replay_credits([*earlier, *lines], catalog_dir, Settings(pii_salt=PII_SALT))
    return Scenario(catalog_dir, earlier, lines, expected)


def wait_until_consumed(worker: WorkerProcess, count: float, timeout: float = 120) -> None:
    # Polled often: a kill is meant to land near this point, not a poll later.
    wait_until(
        lambda: events_consumed(worker) >= count,
        timeout=timeout,
        what=f"the worker to consume {count:g} events",
        interval=0.05,
    )


@pytest.mark.long
def test_sigkill_at_three_random_points_loses_and_doubles_nothing(
    isolated_settings: Settings, tmp_path: Path, scenario: Scenario
) -> None:
    lines = scenario.lines
    chance = random.Random(23)
    worker = WorkerProcess(isolated_settings, tmp_path / "worker.log")
    worker.start()
    try:
        scenario.load_history(worker)
        quarter = len(lines) // 4
        for kill in range(3):
            feed(isolated_settings, lines[kill * quarter : (kill + 1) * quarter])
            # Killed in the middle of the work: once this process has read a random share of
            # a quarter (it restarted from the last commit, so more than that is waiting).
            already = len(scenario.history) if kill == 0 else 0
            wait_until_consumed(worker, already + int(chance.uniform(0.2, 0.8) * quarter))
            worker.kill()
            worker.start()
        feed(isolated_settings, lines[3 * quarter :])
        actual = wait_for_credits(worker, scenario.expected, timeout=300)
    finally:
        worker.stop()
    assert actual == scenario.expected
    print("\nSIGKILL x3:", scenario.report())


@pytest.mark.shared_broker
def test_broker_restarted_mid_stream_loses_and_doubles_nothing(
    isolated_settings: Settings, tmp_path: Path, scenario: Scenario
) -> None:
    worker = WorkerProcess(isolated_settings, tmp_path / "worker.log")
    worker.start()
    try:
        scenario.feed_first_half(worker)
        subprocess.run([str(STACK), "restart-kafka"], check=True, timeout=120)
        feed(isolated_settings, scenario.second_half)
        actual = wait_for_credits(worker, scenario.expected, timeout=300)
        assert worker.endpoint("/health")[0] == 200, "the worker did not survive the restart"
    finally:
        worker.stop()
    assert actual == scenario.expected
    print("\nbroker restart:", scenario.report())


@pytest.mark.long
def test_clickhouse_failing_for_20_seconds_holds_offsets_then_catches_up(
    isolated_settings: Settings, tmp_path: Path, scenario: Scenario
) -> None:
    failing = tmp_path / "clickhouse-fails"
    worker = WorkerProcess(
        isolated_settings,
        tmp_path / "worker.log",
        module="tests.integration.faulty_sink",
        extra_env={"ATTRIBUTION_TEST_SINK_FAILS_WHILE": str(failing)},
    )
    worker.start()
    try:
        scenario.feed_first_half(worker)
        failing.touch()
        fault_ends = time.monotonic() + 20
        feed(isolated_settings, scenario.second_half)
        wait_until(
            lambda: worker.metric("attribution_sink_failures_total") != 0,
            timeout=max(0.0, fault_ends - time.monotonic()),
            what="an insert attempted (and failed) during the fault",
            interval=0.1,
        )
        stored_when_failing = len(clickhouse_credits(worker))
        rows_lag_seen = 0.0
        while time.monotonic() < fault_ends:
            rows_lag_seen = max(rows_lag_seen, _rows_lag(worker))
            time.sleep(0.5)
        stored_after_failing = len(clickhouse_credits(worker))
        retries = worker.metric("attribution_sink_retries_total")
        failing.unlink()
        actual = wait_for_credits(worker, scenario.expected, timeout=300)
    finally:
        worker.stop()
    assert stored_after_failing == stored_when_failing, "rows were stored while inserts failed"
    assert rows_lag_seen > 0, "the rows topic was committed while nothing could be stored"
    assert retries > 0
    assert actual == scenario.expected
    print(f"\nClickHouse down 20 s (rows lag up to {rows_lag_seen:.0f}):", scenario.report())


def _rows_lag(worker: WorkerProcess) -> float:
    return sum(
        value
        for (name, labels), value in worker.metrics().items()
        if name == "attribution_consumer_lag" and ("topic", "rows") in labels
    )


@pytest.mark.long
def test_two_workers_share_the_load_and_one_is_killed(
    isolated_settings: Settings, tmp_path: Path, scenario: Scenario
) -> None:
    lines = scenario.lines
    half = len(lines) // 2
    sink = WorkerProcess(with_role(isolated_settings, "sink", tmp_path), tmp_path / "sink.log")
    first, second = (
        WorkerProcess(
            with_role(isolated_settings, "stages", tmp_path / name), tmp_path / f"{name}.log"
        )
        for name in ("first", "second")
    )
    version = scenario.publish_catalog(isolated_settings)
    sink.start()
    first.start()
    second.start()
    try:
        for worker in (sink, first, second):
            worker.wait_for_catalog(version)
        load_history(isolated_settings, scenario.history)
        feed(isolated_settings, lines[:half])
        wait_until(
            lambda: (
                events_consumed(first) + events_consumed(second)
                >= len(scenario.history) + half // 3
            ),
            timeout=120,
            what=f"the two workers to consume {half // 3} events",
            interval=0.05,
        )
        shares = (events_consumed(first), events_consumed(second))
        first.kill()
        feed(isolated_settings, lines[half:])
        actual = wait_for_credits(sink, scenario.expected, timeout=300)
        taken_over = assigned_event_partitions(second)
    finally:
        for worker in (first, second, sink):
            worker.stop()
    assert all(share > 0 for share in shares), f"one worker did all the work: {shares}"
    assert taken_over == isolated_settings.partitions
    assert actual == scenario.expected
    print(f"\ntwo workers {shares} then one:", scenario.report())
