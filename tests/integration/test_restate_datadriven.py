"""`attribution restate` and the data-driven models: the restate splits the restated orders
under `markov` and `shapley` as the worker's data-driven pass would, so every model switches at
once. On the embedded ClickHouse engine (one data dir per process, hence its own module); the
stored history runs through the real attribution core, no Kafka is needed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from attribution.datadriven_credits import weights_version_of
from attribution.replay import LocalPipeline
from attribution.rows import Row
from attribution.rules import Rules
from schemas.catalog import read_catalog_dir
from schemas.events import validate_event
from simulation.storefront import Storefront
from sinks.catalog_store import catalog_rows, exchange_rates
from sinks.clickhouse import ClickHouseWriter, connect
from sinks.datadriven import DataDrivenSink
from sinks.migrations import migrate
from streams.cli import main
from streams.settings import Settings

pytestmark = pytest.mark.integration
PII_SALT = "restate-salt"


def test_a_restate_splits_the_restated_orders_under_markov_and_shapley_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data-driven models switch with the others: the restate splits the restated `linear`
    rows as the worker's data-driven pass would, by the weights the orders were split by, and
    the restarted worker has nothing left to split (docs/scenarios.md)."""
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    store = Storefront(datetime(2026, 3, 1, tzinfo=UTC), seed=9)
    files = read_catalog_dir(store.write_catalog(tmp_path / "catalog"))
    client = connect(dsn)
    try:
        migrate(client)
        writer = ClickHouseWriter(client)
        writer.insert_now(
            catalog_rows(files, 1, datetime(2026, 2, 1, tzinfo=UTC), exchange_rates(files, "USD"))
        )
        emitted: list[Row] = []
        live = LocalPipeline(
            store.static_catalog(), Rules(), pii_key=PII_SALT.encode(), on_rows=emitted.extend
        )
        live.feed_all(validate_event(event) for event in store.events(300))
        writer.insert_now(row.to_wire() for row in emitted)
        _data_driven_passes(DataDrivenSink(writer, Rules(), WEIGHTS_WINDOW, REWEIGH_WINDOW))
        before = _splits(client)
        assert before["markov"] == before["shapley"] == before["linear"]

        (tmp_path / "restated.env").write_text("ATTRIBUTION_LOOKBACK_DAYS=0.5\n")
        monkeypatch.setenv("ATTRIBUTION_CLICKHOUSE_DSN", dsn)
        monkeypatch.setenv("ATTRIBUTION_PII_SALT", PII_SALT)
        assert main(["restate", "--settings", str(tmp_path / "restated.env")]) == 0
        restated = _splits(client)
        weights_versions = _weights_versions(client)
        [[rows_restated]] = client.query("SELECT count() FROM credits").result_rows

        restated_rules = Settings(lookback_days=0.5).rules
        restarted = DataDrivenSink(writer, restated_rules, WEIGHTS_WINDOW, REWEIGH_WINDOW)
        watermark = restarted.watermark(datetime.now(UTC))
        assert watermark is not None
        # The restarted worker resumes after the restated rows...
        assert asyncio.run(restarted.credit_orders(watermark)) == (0, False)
        # ...and, read again, would split none of them: each is split as it would split it.
        orders = sorted({order_id for order_id, _, _ in restated["linear"]})
        assert restarted.credit_page(orders, restarted.current_weights(), watermark) == 0
        [[rows_after_passes]] = client.query("SELECT count() FROM credits").result_rows
        [[paths]] = client.query(
            "SELECT count() FROM journey_paths FINAL WHERE converted"
        ).result_rows
    finally:
        client.close()
    assert restated["linear"] != before["linear"]  # half a day of lookback credits fewer clicks
    assert restated["markov"] == restated["shapley"] == restated["linear"]
    # Split by real weights, as the orders were before.
    assert weights_versions and 0 not in weights_versions
    assert rows_after_passes == rows_restated
    assert paths == len({order_id for order_id, _, _ in restated["linear"]})


WEIGHTS_WINDOW, REWEIGH_WINDOW = timedelta(days=90), timedelta(days=30)


def _data_driven_passes(sink: DataDrivenSink) -> None:
    """What a worker's ticks do (agents/datadriven.py), until a tick changes nothing."""
    now = datetime.now(UTC)
    for _ in range(20):
        watermark = sink.watermark(now)
        assert watermark is not None
        paths = asyncio.run(sink.write_closed_paths(watermark))
        credited, _ = asyncio.run(sink.credit_orders(watermark))
        weighed = asyncio.run(sink.compute_weights(watermark, now))
        if not (paths or credited or weighed):
            return
    raise AssertionError("the data-driven passes never settled")


def _splits(client: Client) -> dict[str, set[tuple[str, str, Decimal]]]:
    """Per model, the touchpoints credited (order, click) with the order's revenue."""
    rows = client.query(
        "SELECT model, order_id, touchpoint_event_id, sum(revenue_credit) OVER "
        "(PARTITION BY model, order_id) FROM credits FINAL WHERE NOT is_deleted"
    ).result_rows
    splits: dict[str, set[tuple[str, str, Decimal]]] = defaultdict(set)
    for model, order_id, touchpoint, order_revenue in rows:
        splits[model].add((order_id, touchpoint, Decimal(order_revenue)))
    return splits


def _weights_versions(client: Client) -> set[int]:
    """The weights versions the live `markov` and `shapley` rows were split by."""
    rows = client.query(
        "SELECT DISTINCT version FROM credits FINAL "
        "WHERE model IN ('markov', 'shapley') AND NOT is_deleted"
    ).result_rows
    return {weights_version_of(version) for [version] in rows}
