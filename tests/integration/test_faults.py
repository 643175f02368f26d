"""Faults under traffic: the final state in ClickHouse still equals the replay, cent for cent."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from pathlib import Path

from simulation.storefront import Storefront
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.helpers import feed, publish_storefront, replay_credits, wait_for_credits

SHOPPERS = 17_500  # about 49k events


def test_sigkill_at_three_random_points_loses_and_doubles_nothing(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings
    storefront = Storefront(datetime(2026, 5, 1, tzinfo=UTC), seed=23)
    catalog_dir, version, lines = publish_storefront(
        settings, storefront, tmp_path, storefront.events(SHOPPERS)
    )
    assert len(lines) >= 48_000
    expected = replay_credits(lines, catalog_dir, settings)
    chance = random.Random(23)

    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_for_catalog(version)
        quarter = len(lines) // 4
        for kill in range(3):
            feed(settings, lines[kill * quarter : (kill + 1) * quarter])
            # Killed in the middle of the work: once this process has read a random share of
            # a quarter (it restarted from the last commit, so more than that is waiting).
            kill_after = int(chance.uniform(0.2, 0.8) * quarter)
            deadline = time.monotonic() + 120
            while worker.metric("attribution_events_consumed_total") < kill_after:
                assert time.monotonic() < deadline, "the worker stopped consuming"
                time.sleep(0.05)
            worker.kill()
            worker.start()
        feed(settings, lines[3 * quarter :])
        actual = wait_for_credits(worker, expected, timeout=300)
    finally:
        worker.stop()
    assert actual == expected
    cents = sum(credit[6] for credit in expected if credit[1] == "last_click") * 100
    print(f"\n{len(lines)} events, {len(expected)} credit rows, {cents} cents per model equal")
