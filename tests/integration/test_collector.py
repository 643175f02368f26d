"""The HTTP collector and the Shopify webhooks against a real worker, Kafka and ClickHouse."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.collector import sign
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.helpers import click, dead_letters, topic_records
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[1] / "fixtures" / "shopify"
SECRET = "collector-test-secret"
SHOPIFY_SECRET = "shopify-test-secret"


@pytest.fixture
def collector(isolated_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    settings = isolated_settings.model_copy(
        update={"collector_secret": SECRET, "shopify_webhook_secret": SHOPIFY_SECRET}
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    yield worker
    worker.stop()


def post(
    worker: WorkerProcess, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    url = f"http://{worker.settings.web_host}:{worker.settings.web_port}{path}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def post_events(worker: WorkerProcess, body: bytes) -> tuple[int, dict[str, Any]]:
    return post(worker, "/v1/events", body, {"X-Signature": sign(SECRET, body)})


def test_mixed_batch_accepts_valid_events_and_dead_letters_the_rest(
    collector: WorkerProcess,
) -> None:
    batch = [
        click("c1"),
        click("c2", occurred_at="2026-11-20T10:00:00"),  # no offset
        {"type": "teleport", "event_id": "x"},
        click("c3", amount=1.5),
    ]
    status, answer = post_events(collector, json.dumps(batch).encode())
    assert status == 200
    assert (answer["accepted"], answer["invalid"]) == (2, 2)
    assert [result["status"] for result in answer["results"]] == [
        "accepted",
        "invalid",
        "invalid",
        "accepted",
    ]
    assert answer["results"][1]["field"] == "occurred_at"
    assert answer["results"][2]["field"] == "type"
    wait_until(
        lambda: (
            collector.sql("SELECT event_id FROM clicks FINAL ORDER BY event_id") == [["c1"], ["c3"]]
        ),
        timeout=60,
        what="exactly the accepted clicks c1 and c3 in ClickHouse",
    )
    letters = dead_letters(collector.settings, 2)
    assert sorted(letter["field"] for letter in letters) == ["occurred_at", "type"]
    assert all(letter["reason"] and letter["dead_lettered_at"] for letter in letters)


def test_ndjson_is_accepted_like_an_array_and_a_request_is_one_record(
    collector: WorkerProcess,
) -> None:
    body = b"\n".join(json.dumps(click(f"n{index}")).encode() for index in range(3))
    status, answer = post_events(collector, body)
    assert (status, answer["accepted"]) == (200, 3)
    # The first record holds all three: the request was written as one record.
    [record] = topic_records(collector.settings, "events", 1)
    assert [event["event_id"] for event in json.loads(record)] == ["n0", "n1", "n2"]
    wait_until(
        lambda: (
            collector.sql("SELECT event_id FROM clicks FINAL ORDER BY event_id")
            == [["n0"], ["n1"], ["n2"]]
        ),
        timeout=60,
        what="the three clicks of the one record in ClickHouse",
    )
    assert collector.metric("attribution_events_consumed_total") == 3


def test_a_full_batch_arriving_in_many_reads_is_accepted_whole(collector: WorkerProcess) -> None:
    padding = "x" * 700  # ~0.9 MB in all: the body reaches the worker over many socket reads
    body = b"\n".join(
        json.dumps(click(f"f{index}", url=f"https://shop.example/?p={padding}")).encode()
        for index in range(1000)
    )
    assert 500_000 < len(body) <= 1_000_000
    status, answer = post_events(collector, body)
    assert (status, answer["accepted"], answer["invalid"]) == (200, 1000, 0)


def test_unsigned_oversize_and_overfull_requests_are_refused(collector: WorkerProcess) -> None:
    body = json.dumps([click("s1")]).encode()
    assert post(collector, "/v1/events", body, {})[0] == 401
    assert post(collector, "/v1/events", body, {"X-Signature": sign("wrong", body)})[0] == 401
    huge = b"[" + b" " * 1_000_000 + b"]"
    assert post_events(collector, huge)[0] == 413
    overfull = b"\n".join([json.dumps(click("o")).encode()] * 1001)
    assert post_events(collector, overfull)[0] == 413
    assert collector.sql("SELECT count() FROM clicks WHERE event_id IN ('s1', 'o')") == [[0]]


def shopify_post(worker: WorkerProcess, topic: str, body: bytes) -> tuple[int, dict[str, Any]]:
    digest = hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).digest()
    headers = {"X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode()}
    return post(worker, f"/v1/webhooks/shopify/{topic}", body, headers)


def test_shopify_order_and_refund_webhooks_land_in_clickhouse(collector: WorkerProcess) -> None:
    order = (FIXTURES / "orders_create.json").read_bytes()
    refund = (FIXTURES / "refunds_create.json").read_bytes()
    assert post(collector, "/v1/webhooks/shopify/orders", order, {})[0] == 401
    assert shopify_post(collector, "orders", order) == (200, {"accepted": 2})
    assert shopify_post(collector, "refunds", refund) == (200, {"accepted": 1})
    expected = [["820982911946154508", "shopify-115310627314723954", "403", "199"]]
    sql = "SELECT order_id, customer_id, toString(total), toString(refunded) FROM orders FINAL"
    wait_until(
        lambda: collector.sql(sql) == expected,
        timeout=60,
        what="the Shopify order with its refund in ClickHouse",
    )
    assert collector.sql("SELECT code FROM code_redemptions FINAL") == [["CREATOR000-10"]]


DEVSTACK = Path(os.environ.get("ATTRIBUTION_DEVSTACK_DIR", Path(__file__).parents[2] / ".devstack"))
KAFKA_PID_FILE = DEVSTACK / "kafka.pid"


@pytest.mark.shared_broker
def test_collector_answers_503_while_kafka_cannot_take_events(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings.model_copy(
        update={"collector_secret": SECRET, "collector_ack_timeout_seconds": 2.0}
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    broker = int(KAFKA_PID_FILE.read_text())
    try:
        # A frozen broker (SIGSTOP) takes no events and answers nothing: exactly an outage.
        os.kill(broker, signal.SIGSTOP)
        try:
            status, answer = post_events(worker, json.dumps([click("during-outage")]).encode())
        finally:
            os.kill(broker, signal.SIGCONT)
        assert status == 503
        assert "retry" in answer["error"]
        # Once Kafka is back, the same request is accepted.
        status, _ = post_events(worker, json.dumps([click("after-outage")]).encode())
        assert status == 200
    finally:
        worker.stop()
