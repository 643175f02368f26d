"""`attribution backfill`: load a history of events into a running pipeline through Kafka.

Credits are independent of arrival order only for events that arrive no later than the
allowed lateness after newer ones (docs/contract.md, 5). A history of months sent at once
would reach the keyed stages in whatever order the partitions are drained, so the backfill
sends it by event time, one window of half the allowed lateness at a time, and waits for the
workers to have committed every record of every input topic before it sends the next window.
Within a window events may arrive in any order, which the lateness covers; across windows
they arrive in event-time order.

Re-running a backfill sends the same events again: every stage dedupes by `event_id` (orders
by `order_id`), and ClickHouse keeps one row per key under FINAL, so nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from schemas.events import InvalidEvent, decode_event
from streams.settings import Settings

# The worker's consumer group reads these; the rows topic belongs to the sink's own group.
STAGE_INPUTS = (
    "events",
    "traffic-commands",
    "visitor-commands",
    "order-commands",
    "journey-commands",
)


@dataclass
class History:
    """A file's events in the order the backfill sends them."""

    windows: list[list[bytes]] = field(default_factory=list)
    """Valid events by event time, cut into windows of `window` of event time."""
    invalid: list[tuple[int, bytes, str]] = field(default_factory=list)
    """(line number, line, error) of lines that are not valid events: sent too, so that the
    workers dead-letter them with their reason like any invalid event."""

    @property
    def valid_count(self) -> int:
        return sum(len(window) for window in self.windows)


def read_history(path: Path, window: timedelta) -> History:
    """A JSON-lines file's events in the order the backfill sends them."""
    with path.open("rb") as handle:
        return plan_history(enumerate(handle, start=1), window)


def plan_history(numbered_lines: Iterable[tuple[int, bytes]], window: timedelta) -> History:
    """Sort the valid events of (line number, line) pairs by (occurred_at, line number) and
    cut them into windows of `window` of event time.

    >>> import json
    >>> lines = [json.dumps({"type": "identify", "event_id": n, "occurred_at": t,
    ...     "visitor_id": "v", "customer_id": "c"}).encode() for n, t in
    ...     [("b", "2026-03-20T00:00:00Z"), ("a", "2026-03-01T00:00:00Z"), ("c", "x")]]
    >>> history = plan_history(enumerate(lines, start=1), timedelta(days=7))
    >>> [[json.loads(line)["event_id"] for line in window] for window in history.windows]
    [['a'], ['b']]
    >>> [(number, error.split(":")[0]) for number, _, error in history.invalid]
    [(3, 'occurred_at')]
    """
    timed: list[tuple[datetime, int, bytes]] = []
    history = History()
    for number, raw in numbered_lines:
        line = raw.strip()
        if not line:
            continue
        try:
            timed.append((decode_event(line).occurred_at, number, line))
        except InvalidEvent as error:
            history.invalid.append((number, line, str(error)))
    timed.sort()
    window_end: datetime | None = None
    for occurred_at, _, line in timed:
        if window_end is None or occurred_at >= window_end:
            history.windows.append([])
            window_end = occurred_at + window
        history.windows[-1].append(line)
    return history


async def _committed_offsets(
    admin: AIOKafkaAdminClient, group_id: str, attempts: int = 40
) -> dict[TopicPartition, Any]:
    # A new cluster creates its offsets topic on the first coordinator lookup and answers
    # "coordinator not available" until it has: a retriable error, retried.
    failures = 0
    while True:
        try:
            offsets: dict[TopicPartition, Any] = await admin.list_consumer_group_offsets(group_id)
            return offsets
        except KafkaError as error:
            failures += 1
            if not error.retriable or failures == attempts:
                raise
        await asyncio.sleep(0.25)


async def unconsumed(settings: Settings, group_id: str, names: Sequence[str]) -> int:
    """Records of the topics `names` (without prefix) that `group_id` has not committed yet."""
    topics = [settings.topic(name) for name in names]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    await consumer.start()
    try:
        partitions = [
            TopicPartition(described["topic"], partition["partition"])
            for described in await admin.describe_topics(topics)
            for partition in described["partitions"]
        ]
        if not partitions:
            raise LookupError(f"none of the topics {topics} exists: are the workers running?")
        ends = await consumer.end_offsets(partitions)
        committed = await _committed_offsets(admin, group_id)
        # A partition the group never committed is listed without an offset, or with -1.
        done = {tp: max(meta.offset, 0) for tp, meta in committed.items()}
        return sum(max(end - done.get(tp, 0), 0) for tp, end in ends.items())
    finally:
        await consumer.stop()
        await admin.close()


async def wait_until_consumed(settings: Settings, poll_seconds: float = 0.5) -> None:
    """Return once the workers have committed every record of their input topics."""
    # Kafka tells nobody when a group catches up: committed offsets are polled.
    while True:
        if await unconsumed(settings, settings.app_id, STAGE_INPUTS) == 0:
            return
        await asyncio.sleep(poll_seconds)


async def send_history(
    settings: Settings,
    history: History,
    report: Callable[[str], None],
    window_seconds: float = 600.0,
) -> int:
    """Send the history window by window, waiting for the workers between windows; return
    how many records were sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    topic = settings.topic("events")
    total = history.valid_count + len(history.invalid)
    sent = 0
    await producer.start()
    try:
        invalid = [line for _, line, _ in history.invalid]
        batches = [*history.windows, *([invalid] if invalid else [])]
        for number, batch in enumerate(batches, start=1):
            futures = [await producer.send(topic, line) for line in batch]
            await asyncio.gather(*futures)
            sent += len(batch)
            try:
                async with asyncio.timeout(window_seconds):
                    await wait_until_consumed(settings)
            except TimeoutError:
                raise TimeoutError(
                    f"window {number} not consumed within {window_seconds:g} s: is a worker "
                    f"running with app id {settings.app_id!r} and topic prefix "
                    f"{settings.topic_prefix!r}?"
                ) from None
            report(f"window {number}/{len(batches)}: {sent}/{total} events sent and consumed")
    finally:
        await producer.stop()
    return sent


def load_history(
    settings: Settings, lines: Sequence[bytes], report: Callable[[str], None] = lambda _: None
) -> int:
    """Backfill events held in memory (the demo's, the Kafka tests' and the benchmark's
    histories); return how many were sent."""
    history = plan_history(enumerate(lines, start=1), settings.rules.allowed_lateness / 2)
    return asyncio.run(send_history(settings, history, report))


def run_backfill(settings: Settings, path: Path) -> int:
    """The `attribution backfill` command."""
    history = read_history(path, settings.rules.allowed_lateness / 2)
    for number, _, error in history.invalid:
        print(f"{path}:{number}: invalid event (dead-lettered): {error}", file=sys.stderr)
    sent = asyncio.run(
        send_history(settings, history, lambda line: print(line, file=sys.stderr, flush=True))
    )
    print(
        f"{sent} events backfilled in {len(history.windows)} windows of event time; "
        f"{len(history.invalid)} invalid lines sent to the dead letters",
        file=sys.stderr,
    )
    return 0
