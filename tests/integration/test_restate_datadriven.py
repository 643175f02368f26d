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
from attribution.rules import Rules
from schemas.events import validate_event
from simulation.storefront import Storefront
from sinks.clickhouse import connect
from sinks.datadriven import LAST_CREDITED_SQL, DataDrivenSink
from streams.cli import main
from streams.restate import settings_refusal
from streams.settings import Settings
from streams.supervisor import REFUSED_TO_START
from tests.integration.helpers import storefront_clickhouse

pytestmark = pytest.mark.integration
PII_SALT = "restate-salt"


def test_a_restate_splits_the_restated_orders_under_markov_and_shapley_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data-driven models switch with the others: the restate splits the restated `linear`
    rows as the worker's data-driven pass would, each order by the weights version it was split
    by (no reweigh window here), stores their paths and every non-converting path under the new
    lookback, and the restarted worker resumes after them with nothing left to split or write
    (docs/scenarios.md)."""
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    store = Storefront(datetime(2026, 3, 1, tzinfo=UTC), seed=9)
    client = connect(dsn)
    try:
        writer, live, emitted = storefront_clickhouse(client, store, tmp_path / "catalog", PII_SALT)
        # Two deliveries, weights computed after each: the orders of the first keep the first
        # weights version (no reweigh window), those of the second take a later one.
        events = store.events(300)
        for delivery in (events[: len(events) // 2], events[len(events) // 2 :]):
            live.feed_all(validate_event(event) for event in delivery)
            writer.insert_now(row.to_wire() for row in emitted)
            emitted.clear()
            _data_driven_passes(DataDrivenSink(writer, Rules(), WEIGHTS_WINDOW, timedelta(0)))
        before = _splits(client)
        versions_before = _weights_versions(client)
        closed_before = _closed_paths(client)
        [[current]] = client.query("SELECT max(version) FROM model_weights").result_rows

        (tmp_path / "restated.env").write_text("ATTRIBUTION_LOOKBACK_DAYS=0.5\n")
        monkeypatch.setenv("ATTRIBUTION_CLICKHOUSE_DSN", dsn)
        monkeypatch.setenv("ATTRIBUTION_PII_SALT", PII_SALT)
        monkeypatch.setenv("ATTRIBUTION_WEIGHTS_REWEIGH_DAYS", "0")
        assert main(["restate", "--settings", str(tmp_path / "restated.env")]) == 0
        report = capsys.readouterr().err
        restated = _splits(client)
        versions_restated = _weights_versions(client)
        paths = _converting_paths(client)
        linear_paths = _linear_paths(client)
        closed_restated = _closed_paths(client)
        [[rows_restated, newest_restated]] = client.query(
            "SELECT count(), max(written_at) FROM credits"
        ).result_rows
        [[resume_after]] = client.query(LAST_CREDITED_SQL).result_rows

        restated_rules = Settings(lookback_days=0.5).rules
        restarted = DataDrivenSink(writer, restated_rules, WEIGHTS_WINDOW, timedelta(0))
        watermark = restarted.watermark(datetime.now(UTC))
        assert watermark is not None
        # The restarted worker resumes after the restated rows...
        assert asyncio.run(restarted.credit_orders(watermark)) == (0, False)
        assert asyncio.run(restarted.write_closed_paths(watermark)) == 0
        # ...and, read again, would split none of them: each is split as it would split it.
        orders = sorted(versions_restated)
        assert restarted.credit_page(orders, restarted.current_weights(), watermark) == 0
        [[rows_after_passes]] = client.query("SELECT count() FROM credits").result_rows
        # A worker started with the settings of before would credit under other rules.
        monkeypatch.setenv("ATTRIBUTION_KAFKA_URL", "kafka://127.0.0.1:9")  # never reached
        assert main(["worker", "--processes", "1"]) == REFUSED_TO_START
        refused = capsys.readouterr().err
        assert settings_refusal(client, Settings(lookback_days=0.5)) is None
    finally:
        client.close()
    assert _split_from_linear(before)
    assert restated["linear"] != before["linear"]  # half a day of lookback credits fewer clicks
    assert _split_from_linear(restated)
    # Every order keeps the weights it was split by, though newer ones exist.
    assert versions_restated == versions_before
    assert 0 < min(versions_before.values()) < current
    assert rows_after_passes == rows_restated
    # Each restated order's path is its restated touchpoints', though the replaced settings
    # restated some orders more often (their old paths have higher versions); stored where a
    # restart resumes.
    assert resume_after >= newest_restated
    assert paths == linear_paths
    # The journeys without an order are cut by the new lookback too: under 30 days few had
    # settled, under half a day many have, none longer than the lookback.
    assert len(closed_restated) > len(closed_before)
    assert max(closed_restated.values()) <= timedelta(days=0.5)
    assert refused.startswith(
        "not started: the stored credits follow settings version 2, and these settings differ: "
        "lookback_days 30 here, 0.5 there. Start the worker with version 2's settings"
    )
    assert (
        f"; journey paths written again: {len(paths)} with an order, {len(closed_restated)} "
        "without; version 1 stays in credits_s1"
    ) in report


WEIGHTS_WINDOW = timedelta(days=90)


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


def _splits(client: Client) -> dict[str, dict[str, tuple[Decimal, frozenset[str]]]]:
    """Per model and order, the revenue credited and the touchpoints credited."""
    rows = client.query(
        "SELECT model, order_id, sum(revenue_credit), groupArray(touchpoint_event_id) "
        "FROM credits FINAL WHERE NOT is_deleted GROUP BY model, order_id"
    ).result_rows
    splits: dict[str, dict[str, tuple[Decimal, frozenset[str]]]] = defaultdict(dict)
    for model, order_id, revenue, touchpoints in rows:
        splits[model][order_id] = (Decimal(revenue), frozenset(touchpoints))
    return splits


def _split_from_linear(splits: dict[str, dict[str, tuple[Decimal, frozenset[str]]]]) -> bool:
    """Whether every order's `markov` and `shapley` credit is its `linear` revenue, over its
    linear touchpoints (a touchpoint whose influencer weighs nothing gets no row)."""
    linear = splits["linear"]
    return all(
        split.keys() == linear.keys()
        and all(
            revenue == linear[order_id][0] and touchpoints <= linear[order_id][1]
            for order_id, (revenue, touchpoints) in split.items()
        )
        for split in (splits["markov"], splits["shapley"])
    )


def _weights_versions(client: Client) -> dict[str, int]:
    """Per order, the weights version its live `markov` and `shapley` rows were split by."""
    rows = client.query(
        "SELECT order_id, groupUniqArray(version) FROM credits FINAL "
        "WHERE model IN ('markov', 'shapley') AND NOT is_deleted GROUP BY order_id"
    ).result_rows
    versions = {}
    for order_id, [version, *others] in rows:
        assert not others, f"order {order_id} split by two versions"
        versions[order_id] = weights_version_of(version)
    return versions


def _converting_paths(client: Client) -> dict[str, list[tuple[str, ...]]]:
    """Per order, the influencers of its converting path as the weights read it (FINAL)."""
    paths: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for order_id, influencers in client.query(
        "SELECT order_id, influencers FROM journey_paths FINAL WHERE converted"
    ).result_rows:
        paths[order_id].append(tuple(influencers))
    return paths


def _closed_paths(client: Client) -> dict[str, timedelta]:
    """Per non-converting path, the time from its first click to its last."""
    return {
        path_id: ended_at - first
        for path_id, first, ended_at in client.query(
            "SELECT path_id, touched_at[1], ended_at FROM journey_paths FINAL WHERE NOT converted"
        ).result_rows
    }


def _linear_paths(client: Client) -> dict[str, list[tuple[str, ...]]]:
    """Per order, the influencers of its live `linear` rows in position order."""
    touchpoints: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for order_id, position, influencer_id in client.query(
        "SELECT order_id, position, influencer_id FROM credits FINAL "
        "WHERE model = 'linear' AND NOT is_deleted"
    ).result_rows:
        touchpoints[order_id].append((position, influencer_id))
    return {
        order_id: [tuple(influencer for _, influencer in sorted(rows) if influencer)]
        for order_id, rows in touchpoints.items()
    }
