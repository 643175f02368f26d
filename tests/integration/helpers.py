"""What the integration tests share: feeding Kafka, the replay's credits, ClickHouse's credits."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from clickhouse_connect.driver.client import Client
from pydantic import SecretStr

from attribution.models import ALL_MODELS
from attribution.replay import LocalPipeline
from attribution.rows import Row
from attribution.rules import Rules
from schemas.catalog import read_catalog_dir
from schemas.events import InvalidEvent, decode_event
from simulation.storefront import Storefront
from sinks.catalog_store import catalog_rows, exchange_rates, publish_catalog, to_static_catalog
from sinks.clickhouse import ClickHouseWriter
from sinks.migrations import migrate
from streams.producer import produce_events
from streams.settings import Settings
from streams.worker_process import WorkerProcess, free_port
from tests.waiting import wait_until

EXAMPLES = Path(__file__).parents[2] / "examples"
# Every integration worker runs with a key, as production does, so clicks pass the traffic stage
# (attribution/traffic.py) and every end-to-end test checks it too; replays must use it as well.
PII_SALT = SecretStr("integration-tests")
# The replay is the contract of the rule-based models; the data-driven ones (markov, shapley)
# are credited afterwards by the sink from what it stored (tests/integration/test_datadriven_sink).
RULE_BASED = "model IN ({})".format(", ".join(f"'{model.value}'" for model in ALL_MODELS))
FINAL_CREDITS_SQL = f"""
    SELECT order_id, model, touchpoint_event_id, influencer_id, campaign_id,
           toString(credit), toString(revenue_credit), currency
    FROM credits FINAL WHERE {RULE_BASED}
"""
Credit = tuple[str, str, str, str, str, Decimal, Decimal, str]


def replay_credits(lines: list[bytes], catalog_dir: Path, settings: Settings) -> set[Credit]:
    pipeline = LocalPipeline(
        to_static_catalog(read_catalog_dir(catalog_dir)), settings.rules, pii_key=settings.pii_key
    )
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
    """Poll until ClickHouse holds exactly the expected final credits, or the timeout passes;
    either way the credits it holds, so that the caller's assertion shows any difference."""
    actual: set[Credit] = set()

    def holds_expected() -> bool:
        nonlocal actual
        actual = clickhouse_credits(worker)
        return actual == expected

    # On a timeout the caller compares: a set difference says more than "timed out".
    with contextlib.suppress(AssertionError):
        wait_until(holds_expected, timeout=timeout, what="the expected credits", interval=0.5)
    return actual


def publish_storefront(
    settings: Settings, storefront: Storefront, directory: Path, events: list[dict[str, Any]]
) -> tuple[Path, int, list[bytes]]:
    """Publish the storefront's catalog; its directory, version, and `events` as raw lines."""
    catalog_dir = storefront.write_catalog(directory / "catalog")
    version = publish_catalog(
        settings.redis_url, settings.topic_prefix, read_catalog_dir(catalog_dir)
    )
    return catalog_dir, version, [json.dumps(event).encode() for event in events]


def feed(settings: Settings, lines: list[bytes]) -> None:
    asyncio.run(produce_events(settings.bootstrap_servers, settings.topic("events"), lines))


def topic_records(settings: Settings, name: str, count: int) -> list[bytes]:
    """The values of up to `count` records of the topic `name` (without prefix), from the
    start; fewer when no more arrive within 30 s."""

    async def read() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            settings.topic(name),
            bootstrap_servers=settings.bootstrap_servers,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        records: list[bytes] = []
        try:
            # Awaits the consumer, so not tests.waiting.wait_until (which blocks the loop).
            async with asyncio.timeout(30):
                while len(records) < count:
                    batch = await consumer.getmany(timeout_ms=500)
                    records += [record.value for rs in batch.values() for record in rs]
        except TimeoutError:
            pass  # fewer than `count`: the caller's assertion on them says how many
        finally:
            await consumer.stop()
        return records

    return asyncio.run(read())


def dead_letters(settings: Settings, count: int) -> list[dict[str, Any]]:
    return [json.loads(value) for value in topic_records(settings, "dead-letters", count)]


def click(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "click",
        "event_id": event_id,
        "occurred_at": "2026-11-20T10:00:00+01:00",
        "visitor_id": "v1",
        "url": "https://shop.example/?utm_content=anna",
        **fields,
    }


def order(
    event_id: str, at: str, visitor: str, total: str, currency: str = "USD"
) -> dict[str, Any]:
    """An order whose id is its event id, placed by customer `u-<visitor>` on that visitor."""
    return {
        "type": "order",
        "event_id": event_id,
        "occurred_at": at,
        "order_id": event_id,
        "customer_id": f"u-{visitor}",
        "visitor_id": visitor,
        "currency": currency,
        "total": total,
    }


def with_role(settings: Settings, role: str, data_dir: Path) -> Settings:
    """The settings of one more worker of the same app: `role`, its own data dir and port."""
    return settings.model_copy(update={"role": role, "data_dir": data_dir, "web_port": free_port()})


def events_consumed(worker: WorkerProcess) -> float:
    return worker.metric("attribution_events_consumed_total")


def assigned_event_partitions(worker: WorkerProcess) -> int:
    """Partitions of `events` the worker reports lag for (refreshed every lag interval)."""
    return sum(
        1
        for name, labels in worker.metrics()
        if name == "attribution_consumer_lag" and ("topic", "events") in labels
    )


def storefront_clickhouse(
    client: Client, store: Storefront, catalog_dir: Path, pii_salt: str
) -> tuple[ClickHouseWriter, LocalPipeline, list[Row]]:
    """A migrated ClickHouse holding the storefront's catalog (version 1, rates into USD), and a
    pipeline on that catalog whose rows collect in the list, for the test to store as a worker's
    sink would."""
    migrate(client)
    writer = ClickHouseWriter(client)
    files = read_catalog_dir(store.write_catalog(catalog_dir))
    writer.insert_now(
        catalog_rows(files, 1, datetime(2026, 2, 1, tzinfo=UTC), exchange_rates(files, "USD"))
    )
    emitted: list[Row] = []
    pipeline = LocalPipeline(
        store.static_catalog(), Rules(), pii_key=pii_salt.encode(), on_rows=emitted.extend
    )
    return writer, pipeline, emitted
