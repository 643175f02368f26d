"""What operations see while a worker runs: readiness, lag, latency and the business gauges."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.catalog import read_catalog_dir
from simulation.storefront import Storefront
from sinks.catalog_store import publish_catalog
from streams.backfill import load_history
from streams.settings import Settings
from streams.topics import STREAM_TOPICS
from streams.worker_process import WorkerProcess
from tests.integration.helpers import (
    EXAMPLES,
    clickhouse_credits,
    feed,
    publish_storefront,
    replay_credits,
    wait_for_credits,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def gauge(worker: WorkerProcess, name: str, **labels: str) -> Decimal:
    """A last_click gauge's value, exact enough to compare with ClickHouse's sums."""
    return Decimal(str(worker.metric(name, model="last_click", **labels)))


def count(worker: WorkerProcess, statement: str) -> int:
    """The one number a counting query answers."""
    [[value]] = worker.sql(statement)
    assert isinstance(value, int), f"{statement} answered {value!r}"
    return value


def test_ready_lag_latency_and_campaign_gauges_of_a_live_storefront(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings.model_copy(update={"business_metrics_seconds": 1.0})
    # Campaigns run from 30 days before the storefront opens: they are live now.
    storefront = Storefront(datetime.now(UTC) - timedelta(days=1), seed=5)
    history, live = storefront.split_history(storefront.events(300, timedelta(hours=12)))
    catalog_dir, version, lines = publish_storefront(settings, storefront, tmp_path, live)
    earlier = [json.dumps(event).encode() for event in history]
    expected = replay_credits([*earlier, *lines], catalog_dir, settings)

    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        status, ready = worker.endpoint("/ready")
        assert (status, ready) == (
            200,
            {
                "ready": True,
                "partitions_assigned": True,
                "tables_recovered": True,
                "clickhouse": True,
            },
        )
        worker.wait_for_catalog(version)
        load_history(settings, earlier)
        feed(settings, lines)
        assert wait_for_credits(worker, expected) == expected

        # Every event is committed in the end: no lag left on any events partition.
        wait_until(
            lambda: (
                all(
                    worker.metric("attribution_consumer_lag", topic="events", partition=str(p)) == 0
                    for p in range(settings.partitions)
                )
                and worker.metric("attribution_events_consumed_total") == len(earlier) + len(lines)
            ),
            timeout=60,
            what="every event consumed and no lag on any events partition",
            interval=0.5,
        )
        credited_orders = count(
            worker,
            "SELECT uniqExact(order_id) FROM credits FINAL"
            " WHERE NOT is_deleted AND influencer_id != ''",
        )
        assert worker.metric("attribution_credit_emitted_latency_seconds_count") >= credited_orders
        assert worker.metric("attribution_credit_stored_latency_seconds_count") >= credited_orders
        linked_visitors = count(worker, "SELECT uniqExact(visitor_id) FROM identity_links FINAL")
        assert worker.metric("attribution_identity_merges_total") == linked_visitors

        # The campaign gauges equal the KPIs computed from ClickHouse's final state.
        rows = worker.sql(
            """
            SELECT c.campaign_id, toString(c.conversions), k.clicks, toString(c.revenue)
            FROM (SELECT campaign_id, sum(credit) AS conversions, sum(revenue_credit) AS revenue
                  FROM credits FINAL WHERE NOT is_deleted AND model = 'last_click'
                  AND influencer_id != '' GROUP BY campaign_id) AS c
            JOIN (SELECT campaign_id, count() AS clicks FROM clicks FINAL
                  GROUP BY campaign_id) AS k USING campaign_id
            """
        )
        assert len(rows) == 5
        categories = {
            f"cmp-{category}": category
            for category in ("fashion", "beauty", "electronics", "home", "food")
        }
        for campaign_id, conversions, clicks, revenue in rows:
            assert isinstance(campaign_id, str) and isinstance(clicks, int), rows
            labels = {"campaign": campaign_id, "category": categories[campaign_id]}
            rate = Decimal(str(conversions)) / clicks
            aov = Decimal(str(revenue)) / Decimal(str(conversions))

            # Gauges refresh every second, so a refresh taken before the last refund was
            # restated can show the final conversion rate with an AOV not yet final.
            def kpis_are_exported(
                labels: dict[str, str] = labels, rate: Decimal = rate, aov: Decimal = aov
            ) -> bool:
                exported_rate = gauge(worker, "attribution_campaign_conversion_ratio", **labels)
                exported_aov = gauge(worker, "attribution_campaign_aov", currency="USD", **labels)
                return abs(exported_rate - rate) < Decimal("1e-9") and abs(
                    exported_aov - aov
                ) < Decimal("1e-6")

            wait_until(
                kpis_are_exported,
                timeout=60,
                what=f"the conversion rate and AOV gauges of {campaign_id}",
                interval=0.5,
            )
            assert worker.metric("attribution_campaign_clicks", **labels) == clicks
        assert (
            worker.metric(
                "attribution_category_benchmark_conversion_ratio", category="beauty", bound="low"
            )
            == 0.03
        )
    finally:
        assert worker.stop() == 0


def committed_and_end_offsets(settings: Settings, topic: str) -> tuple[list[int], list[int]]:
    async def read() -> tuple[list[int], list[int]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=settings.app_id
        )
        await consumer.start()
        try:
            partitions = [
                TopicPartition(settings.topic(topic), p) for p in range(settings.partitions)
            ]
            ends = await consumer.end_offsets(partitions)
            committed = [await consumer.committed(tp) or 0 for tp in partitions]
            return committed, [ends[tp] for tp in partitions]
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_sigterm_stores_held_rows_commits_and_exits_in_time(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    # The sink holds every row until it is flushed: only the shutdown can store them.
    settings = isolated_settings.model_copy(
        update={
            "sink_batch_seconds": 3600.0,
            "sink_batch_rows": 1_000_000,
            "lag_interval_seconds": 0.5,
        }
    )
    version = publish_catalog(
        settings.redis_url, settings.topic_prefix, read_catalog_dir(EXAMPLES / "catalog")
    )
    lines = (EXAMPLES / "events.jsonl").read_bytes().splitlines()
    expected = replay_credits(lines, EXAMPLES / "catalog", settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_for_catalog(version)
        feed(settings, lines)

        def only_rows_are_held() -> bool:
            lag = {
                topic: sum(
                    worker.metric("attribution_consumer_lag", topic=topic, partition=str(p))
                    for p in range(settings.partitions)
                )
                for topic in STREAM_TOPICS
            }
            return lag.pop("rows") > 0 and not any(lag.values())

        wait_until(
            only_rows_are_held,
            timeout=60,
            what="every topic consumed but rows, whose records the sink holds",
            interval=0.5,
        )
        assert worker.sql("SELECT count() FROM credits") == [[0]]

        began = time.monotonic()
        assert worker.stop(timeout=30) == 0  # a clean exit: not killed after the timeout
        assert time.monotonic() - began < 30
        committed, ends = committed_and_end_offsets(settings, "rows")
        assert committed == ends

        worker.start()
        assert clickhouse_credits(worker) == expected

        # Everything was committed before the stop: the restarted worker reports no lag,
        # though it has nothing new to commit itself.
        def lags() -> list[float]:
            return [
                value
                for (name, _), value in worker.metrics().items()
                if name == "attribution_consumer_lag"
            ]

        read_partitions = (len(STREAM_TOPICS) - 1) * settings.partitions  # not dead-letters
        wait_until(
            lambda: len(lags()) == read_partitions,
            timeout=60,
            what=f"the lag of all {read_partitions} read partitions reported",
            interval=0.5,
        )
        assert lags() == [0.0] * read_partitions
    finally:
        worker.stop()


def test_json_logs_carry_the_event_id_of_a_refused_event(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings.model_copy(update={"log_format": "json"})
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        bad = {"type": "click", "event_id": "evt-bad-1", "occurred_at": "yesterday"}
        feed(settings, [json.dumps(bad).encode()])

        def refusal_logged() -> bool:
            for line in worker.log_path.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("event_id") == "evt-bad-1":
                    return record["level"] == "warning" and "occurred_at" in record["message"]
            return False

        wait_until(
            refusal_logged,
            timeout=60,
            what="a warning naming evt-bad-1 and occurred_at in the JSON log",
            interval=0.5,
        )
    finally:
        worker.stop()
