"""Producing raw storefront events to the events topic (demo, tests, benchmarks)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer


def event_bytes(event: dict[str, Any] | bytes) -> bytes:
    return event if isinstance(event, bytes) else json.dumps(event).encode()


async def produce_events(
    bootstrap_servers: str, topic: str, events: Iterable[dict[str, Any] | bytes]
) -> int:
    """Send events with acks from the broker; return how many were sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    sent = 0
    try:
        pending = []
        for event in events:
            pending.append(await producer.send(topic, event_bytes(event)))
            sent += 1
        for future in pending:
            await future
    finally:
        await producer.stop()
    return sent
