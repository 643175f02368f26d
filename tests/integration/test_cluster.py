"""A replicated cluster loses a broker mid-stream: ClickHouse still equals the replay.

The devstack's 3-node KRaft cluster (`devstack/stack start --brokers 3`) is started for this
module and stopped afterwards, unless it was running already. The worker's topics get 3 copies
and `min.insync.replicas` 2, and every producer waits for acks=all, so a record acknowledged by
Kafka is on two brokers at least when one of them is killed.

Killing a broker stalls the partitions it led for seconds while the others go on. With live
traffic that is seconds of event time. A backlog of months read at once turns it into months,
beyond the allowed lateness within which credits do not depend on arrival order
(docs/attribution.md), so the storefront here has no sparse customers (whose histories span
months; loading those is the backfill's job): its events span three weeks, mostly three days.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from schemas.catalog import read_catalog_dir
from simulation.storefront import Storefront
from sinks.catalog_store import publish_catalog
from streams.settings import Settings
from streams.worker_process import WorkerProcess, free_port
from tests.integration.helpers import PII_SALT, RULE_BASED, feed, replay_credits, wait_for_credits
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

STACK = Path(__file__).parents[2] / "devstack" / "stack"
BROKERS = {1: 19192, 2: 19193, 3: 19194}  # node id -> port, as devstack/stack lays them out
SHOPPERS = 7_000
Answer = TypeVar("Answer")


def stack(*arguments: str) -> None:
    subprocess.run([str(STACK), *arguments], check=True, timeout=300)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The cluster's Kafka URL; a cluster that cannot start fails the tests here."""
    status = subprocess.run(
        [str(STACK), "status"], capture_output=True, text=True, check=True
    ).stdout
    was_running = all(f"kafka-cluster-{node}: running" in status for node in BROKERS)
    stack("start", "--brokers", "3")
    try:
        yield "kafka://" + ",".join(f"127.0.0.1:{port}" for port in BROKERS.values())
    finally:
        if not was_running:
            stack("stop", "--brokers", "3")


@pytest.fixture
def settings(cluster: str, tmp_path: Path) -> Iterator[Settings]:
    unique = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(
        data_dir=tmp_path / "data",
        kafka_url=cluster,
        topic_prefix=unique,
        app_id=unique,
        web_port=free_port(),
        partitions=4,
        replication_factor=3,
        min_insync_replicas=2,
        sink_batch_seconds=0.3,
        pii_salt=PII_SALT,
    )
    yield settings
    asyncio.run(_admin(settings, _delete_topics))


async def _admin(
    settings: Settings, action: Callable[[AIOKafkaAdminClient, Settings], Awaitable[Answer]]
) -> Answer:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        return await action(admin, settings)
    finally:
        await admin.close()


async def _delete_topics(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    doomed = [name for name in await admin.list_topics() if name.startswith(settings.app_id)]
    if doomed:
        await admin.delete_topics(doomed)


async def _partitions(admin: AIOKafkaAdminClient, settings: Settings) -> list[dict[str, Any]]:
    """Every partition of the worker's topics (topic prefix and app id are the same)."""
    return [
        {"topic": topic["topic"], **partition}
        for topic in await admin.describe_topics()
        if topic["topic"].startswith(settings.app_id)
        for partition in topic["partitions"]
    ]


def partitions(settings: Settings) -> list[dict[str, Any]] | None:
    """The worker's partitions; None when the request went to the broker that is down (the
    admin client asks any broker the metadata lists)."""
    try:
        return asyncio.run(_admin(settings, _partitions))
    except KafkaError:
        return None


def led_by_others(settings: Settings, broker: int) -> bool:
    now = partitions(settings)
    return now is not None and all(p["leader"] not in (broker, -1) for p in now)


def fully_replicated(settings: Settings) -> bool:
    now = partitions(settings)
    return now is not None and all(len(p["isr"]) == len(BROKERS) for p in now)


def records_by_leader(settings: Settings) -> Counter[int]:
    """How many records the partitions each broker leads hold, over the worker's topics."""

    async def end_offsets(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
        await consumer.start()
        try:
            offsets: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            return offsets
        finally:
            await consumer.stop()

    now = partitions(settings)
    assert now is not None, "no cluster metadata with every broker up"
    leaders = {TopicPartition(p["topic"], p["partition"]): int(p["leader"]) for p in now}
    records: Counter[int] = Counter()
    for tp, end in asyncio.run(end_offsets(list(leaders))).items():
        records[leaders[tp]] += end
    return records


def consumed(worker: WorkerProcess) -> float:
    return worker.metric("attribution_events_consumed_total")


@pytest.mark.long
def test_leader_of_the_busiest_partitions_killed_mid_stream_loses_and_doubles_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    started = time.monotonic()
    storefront = Storefront(datetime(2026, 5, 1, tzinfo=UTC), seed=31, sparse_share=0)
    catalog_dir = storefront.write_catalog(tmp_path / "catalog")
    lines = [json.dumps(event).encode() for event in storefront.events(SHOPPERS)]
    expected = replay_credits(lines, catalog_dir, settings)
    half = len(lines) // 2
    version = publish_catalog(
        settings.redis_url, settings.topic_prefix, read_catalog_dir(catalog_dir)
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        assert fully_replicated(settings), "the worker's topics are not 3 copies in sync"
        worker.wait_for_catalog(version)
        feed(settings, lines[:half])
        wait_until(
            lambda: consumed(worker) >= half // 3, timeout=120, what="a third of the first half"
        )
        led = records_by_leader(settings)
        victim, victim_records = led.most_common(1)[0]
        stack("kill-broker", str(victim))
        killed = time.monotonic()
        try:
            # Fed once its partitions have new leaders, so that only what was fed before the
            # kill waits for the failover.
            wait_until(
                lambda: led_by_others(settings, victim),
                timeout=60,
                what=f"new leaders for the partitions broker {victim} led",
            )
            failover = time.monotonic() - killed
            feed(settings, lines[half:])
            wait_until(
                lambda: consumed(worker) >= half + (len(lines) - half) // 2,
                timeout=120,
                what="half of the second half consumed without the broker",
            )
        finally:
            stack("start", "--brokers", "3")
        actual = wait_for_credits(worker, expected, timeout=300)
        stored = worker.sql(f"SELECT count() FROM credits FINAL WHERE {RULE_BASED}")[0][0]
        assert worker.endpoint("/health")[0] == 200, "the worker did not ride through"
        # The restarted broker caught up: every partition has its 3 copies in sync again.
        wait_until(
            lambda: fully_replicated(settings),
            timeout=120,
            what="every partition back to 3 in-sync replicas",
        )
    finally:
        worker.stop()
    assert actual == expected
    assert stored == len(expected), "credit rows doubled"
    cents = int(sum(credit[6] for credit in expected if credit[1] == "last_click") * 100)
    print(
        f"\nbroker {victim} killed (it led {victim_records} of {sum(led.values())} records, new "
        f"leaders in {failover:.1f} s): "
        f"{len(lines)} events, {stored} credit rows, "
        f"{cents} cents per model equal to the replay, in {time.monotonic() - started:.0f} s"
    )
