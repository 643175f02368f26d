"""Junk on the events topic never stops the worker: each invalid payload is dead-lettered with a
reason, and the valid events around it are processed."""

from __future__ import annotations

import json
import random

import pytest

from attribution.privacy import keyed_hash
from schemas.events import RefusedEvent, decode_record
from streams.worker_process import WorkerProcess
from tests.integration.helpers import click, dead_letters, feed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

IP = "198.51.100.23"


def junk(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if kind == 1:
        return b"[" * rng.randrange(1, 5000)
    if kind == 2:
        impossible_date = "2026-13-45T99:00:00Z"
        return json.dumps(click(f"j{rng.random()}", occurred_at=impossible_date, ip=IP)).encode()
    if kind == 3:
        return json.dumps({"type": "order", "event_id": "x", "total": "NaN"}).encode()
    if kind == 4:
        return json.dumps(click("big", url="u" * 300_000)).encode()
    return json.dumps(rng.choice([1, "text", None, [1], {"type": None}])).encode()


def test_worker_dead_letters_junk_and_keeps_processing(worker: WorkerProcess) -> None:
    rng = random.Random(20261123)
    payloads = [junk(rng) for _ in range(200)]
    valid = [json.dumps(click(f"ok{index}")).encode() for index in range(5)]
    # One record holding an array: its valid event counts, its invalid one is refused alone.
    array = json.dumps([click("ok5"), {"type": "teleport", "event_id": "t1"}]).encode()
    mixed = payloads[:100] + valid + payloads[100:] + [array]
    decoded = [item for payload in mixed for item in decode_record(payload)]
    invalid = sum(isinstance(item, RefusedEvent) for item in decoded)
    assert (len(decoded), invalid) == (len(mixed) + 1, 201)

    feed(worker.settings, mixed)

    wait_until(
        lambda: worker.sql("SELECT count() FROM clicks FINAL WHERE event_id LIKE 'ok%'") == [[6]],
        timeout=60,
        what="the 6 valid clicks among the junk in ClickHouse",
    )
    letters = dead_letters(worker.settings, invalid)
    assert len(letters) == invalid
    assert {"type": "teleport", "event_id": "t1"} in [letter["payload"] for letter in letters]
    assert all(letter["reason"] for letter in letters)
    assert IP not in json.dumps(letters), "a dead letter kept a raw IP address"
    hashed_ip = keyed_hash(IP, worker.settings.pii_key)  # the workers run with a key
    assert any(
        letter["payload"].get("ip") == hashed_ip
        for letter in letters
        if isinstance(letter["payload"], dict)
    )
    assert worker.metric("attribution_events_consumed_total") == len(decoded)
    counted = {
        labels: value
        for (name, labels), value in worker.metrics().items()
        if name == "attribution_dead_letters_total"
    }
    assert sum(counted.values()) == invalid
    assert all(dict(labels)["type"] in {"unknown", "click", "order"} for labels in counted)
