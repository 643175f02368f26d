"""`attribution erase --customer ID` on a running worker: the customer leaves ClickHouse, the
Faust tables (their changelogs) and Redis; every total stays, what a restart restores is
the pseudonym's complete journey, and a later refund still restates the order exactly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
import redis
from aiokafka import AIOKafkaConsumer

from attribution.journey import Journey, journey_from_wire
from schemas.catalog import read_catalog_dir
from sinks.catalog_store import publish_catalog
from streams.codecs import decode
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.helpers import EXAMPLES, RULE_BASED, feed, replay_credits, wait_for_credits
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

CUSTOMER, VISITORS = "alice", ("laptop-1", "phone-1")
LATE_REFUND = {
    "type": "refund",
    "event_id": "r-late",
    "occurred_at": "2026-03-12T09:00:00Z",
    "order_id": "1001",
    "currency": "USD",
    "amount": "10.00",
}
TOTALS_SQL = f"""
    SELECT model, influencer_id, toString(sum(credit)), toString(sum(revenue_credit))
    FROM credits FINAL WHERE NOT is_deleted AND {RULE_BASED} GROUP BY model, influencer_id
    ORDER BY model, influencer_id
"""
CUSTOMER_TOTALS_SQL = """
    SELECT count(), toString(sum(net_revenue)), uniqExact(customer_id) FROM orders FINAL
"""


def test_erase_removes_the_customer_everywhere_and_keeps_every_total(
    worker: WorkerProcess,
) -> None:
    settings = worker.settings
    version = publish_catalog(
        settings.redis_url, settings.topic_prefix, read_catalog_dir(EXAMPLES / "catalog")
    )
    lines = (EXAMPLES / "events.jsonl").read_bytes().splitlines()
    worker.wait_for_catalog(version)
    feed(settings, lines)
    wait_for_credits(worker, replay_credits(lines, EXAMPLES / "catalog", settings))
    assert _mentions_of_customer(worker) > 0
    totals = worker.sql(TOTALS_SQL), worker.sql(CUSTOMER_TOTALS_SQL)

    erase = subprocess.run(
        [sys.executable, "-m", "streams.cli", "erase", "--customer", CUSTOMER],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert erase.returncode == 0, erase.stderr
    wait_until(
        lambda: worker.sql("SELECT count() FROM erasures") == [[1]],
        timeout=60,
        what="the erasure applied (its row in erasures)",
    )

    assert _mentions_of_customer(worker) == 0
    assert (worker.sql(TOTALS_SQL), worker.sql(CUSTOMER_TOTALS_SQL)) == totals
    assert worker.sql("SELECT visitors FROM erasures") == [[len(VISITORS)]]
    pseudonymous = worker.sql(
        "SELECT DISTINCT customer_id FROM orders FINAL WHERE order_id = '1001'"
    )
    assert str(pseudonymous[0][0]).startswith("erased-")
    assert _live_changelog_mentions(settings) == []
    assert _redis_mentions(settings) == []

    # What a restart restores: the changelogs hold the pseudonym's journey with every click and
    # the order at the version ClickHouse has, and no state of the customer.
    journey = _restorable_journey(settings, str(pseudonymous[0][0]))
    assert sorted(journey.clicks) == ["k-1", "k-2"]
    stored_version = worker.sql("SELECT max(version) FROM orders WHERE order_id = '1001'")
    assert journey.orders["1001"].version == stored_version[0][0]

    # After a restart (tables restored from those changelogs) a late refund restates the order
    # under the pseudonym exactly as if nobody was erased.
    worker.stop()
    worker.start()
    late = [json.dumps(LATE_REFUND).encode()]
    feed(settings, late)
    expected = replay_credits(lines + late, EXAMPLES / "catalog", settings)
    assert wait_for_credits(worker, expected) == expected
    assert _mentions_of_customer(worker) == 0
    assert worker.sql(
        "SELECT toString(net_revenue), customer_id FROM orders FINAL WHERE order_id = '1001'"
    ) == [["65", pseudonymous[0][0]]]


def _mentions_of_customer(worker: WorkerProcess) -> int:
    visitors = ", ".join(f"'{visitor}'" for visitor in VISITORS)
    counts = [
        worker.sql(f"SELECT count() FROM {table} WHERE customer_id = '{CUSTOMER}'")[0][0]
        for table in ("credits", "orders", "code_redemptions", "clicks", "identity_links")
    ]
    counts.append(worker.sql(f"SELECT count() FROM clicks WHERE visitor_id IN ({visitors})")[0][0])
    counts.append(
        worker.sql(f"SELECT count() FROM identity_links WHERE visitor_id IN ({visitors})")[0][0]
    )
    return sum(int(str(count)) for count in counts)


def _latest_changelog_records(settings: Settings) -> dict[tuple[str, bytes], bytes | None]:
    """The latest record of every key of the tables' changelogs (a tombstone is None), as a
    restarting worker, or a compacted topic, sees them."""

    async def read() -> dict[tuple[str, bytes], bytes | None]:
        consumer = AIOKafkaConsumer(
            *(
                f"{settings.app_id}-{table}-changelog"
                for table in ("traffic", "visitors", "ledgers", "journeys")
            ),
            bootstrap_servers=settings.bootstrap_servers,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        latest: dict[tuple[str, bytes], bytes | None] = {}
        try:
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < 2:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        latest[(record.topic.rsplit("-", 2)[-2], record.key)] = record.value
                        quiet_since = time.monotonic()
        finally:
            await consumer.stop()
        return latest

    return asyncio.run(read())


def _live_changelog_mentions(settings: Settings) -> list[str]:
    """Keys whose latest changelog record still names the customer or their visitors."""
    personal = [CUSTOMER.encode(), *(visitor.encode() for visitor in VISITORS)]
    return [
        f"{table}:{key!r}"
        for (table, key), value in _latest_changelog_records(settings).items()
        if value is not None and any(p in key or p in value for p in personal)
    ]


def _restorable_journey(settings: Settings, pseudonym: str) -> Journey:
    value = _latest_changelog_records(settings)[("journeys", pseudonym.encode())]
    assert value is not None
    return journey_from_wire(decode(value))


def _redis_mentions(settings: Settings) -> list[str]:
    client = redis.Redis.from_url(settings.redis_url)
    mentions = []
    for key in client.scan_iter(f"{settings.topic_prefix}*"):
        dumped = client.dump(key) or b""
        if CUSTOMER.encode() in key or CUSTOMER.encode() in dumped:
            mentions.append(key.decode())
    return mentions
