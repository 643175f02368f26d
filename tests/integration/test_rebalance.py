"""Rebalances under traffic: partitions move between stage workers and nothing is written twice
over or lost, and a worker frozen past its session (a zombie) cannot overwrite the new owner.

Both tests stream one storefront scenario through a `sink` worker and `stages` workers of one
consumer group and compare ClickHouse with `attribution replay` of the same events.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.catalog import read_catalog_dir
from simulation.storefront import Storefront
from sinks.catalog_store import publish_catalog
from streams.backfill import load_history
from streams.fencing import ChangelogFence, record_generation
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.helpers import (
    PII_SALT,
    Credit,
    assigned_event_partitions,
    events_consumed,
    feed,
    replay_credits,
    wait_for_credits,
    with_role,
)
from tests.waiting import wait_until

SHOPPERS = 6_000
TABLES = ("traffic", "visitors", "ledgers", "journeys")


@dataclass(frozen=True)
class Scenario:
    """A storefront's months of history (backfilled first, by event time) and its live days."""

    catalog_dir: Path
    history: list[bytes]
    lines: list[bytes]

    def expected(self, count: int | None = None) -> set[Credit]:
        """The replay's credits once the history and the first `count` live lines are in."""
        return replay_credits(
            [*self.history, *self.lines[:count]], self.catalog_dir, Settings(pii_salt=PII_SALT)
        )

    def cut(self, *shares: float) -> list[list[bytes]]:
        """The lines in consecutive chunks ending at each share of the whole."""
        ends = [int(len(self.lines) * share) for share in shares]
        starts = [0, *ends[:-1]]
        return [self.lines[start:end] for start, end in zip(starts, ends, strict=True)]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, services: None) -> Scenario:
    storefront = Storefront(datetime(2026, 6, 1, tzinfo=UTC), seed=31)
    catalog_dir = storefront.write_catalog(tmp_path_factory.mktemp("rebalance") / "catalog")
    history, live = storefront.split_history(storefront.events(SHOPPERS))
    return Scenario(
        catalog_dir,
        [json.dumps(event).encode() for event in history],
        [json.dumps(event).encode() for event in live],
    )


def _generation(worker: WorkerProcess) -> int:
    return int(worker.metric("attribution_consumer_generation"))


class Cluster:
    """One sink and stage workers sharing a consumer group, with what the test needs of them."""

    def __init__(self, settings: Settings, tmp_path: Path, scenario: Scenario) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.version = publish_catalog(
            settings.redis_url, settings.topic_prefix, read_catalog_dir(scenario.catalog_dir)
        )
        self.sink = self._start("sink", "sink")
        self.stages: dict[str, WorkerProcess] = {}

    def _start(self, role: str, name: str) -> WorkerProcess:
        worker = WorkerProcess(
            with_role(self.settings, role, self.tmp_path / name), self.tmp_path / f"{name}.log"
        )
        worker.start()
        worker.wait_for_catalog(self.version)
        return worker

    def add(self, name: str) -> WorkerProcess:
        self.stages[name] = self._start("stages", name)
        return self.stages[name]

    def consumed(self) -> float:
        return sum(events_consumed(worker) for worker in self.stages.values() if worker.running())

    def stop(self) -> None:
        for worker in [*self.stages.values(), self.sink]:
            worker.stop()


@pytest.mark.long
def test_scaling_from_one_to_three_stage_workers_and_back_while_streaming(
    isolated_settings: Settings, tmp_path: Path, scenario: Scenario
) -> None:
    began = time.monotonic()
    first, second, third = scenario.cut(0.35, 0.7, 1.0)
    cluster = Cluster(isolated_settings, tmp_path, scenario)
    try:
        one = cluster.add("one")
        load_history(isolated_settings, scenario.history)
        feed(isolated_settings, first)
        wait_until(
            lambda: events_consumed(one) >= len(scenario.history) + len(first) // 3,
            timeout=120,
            what="the first worker at work",
        )
        # Scaled out while the first worker has a backlog: each arrival is a rebalance.
        two, three = cluster.add("two"), cluster.add("three")
        feed(isolated_settings, second)
        wait_until(
            lambda: all(events_consumed(worker) > 0 for worker in (one, two, three)),
            timeout=120,
            what="all three workers consuming",
        )
        shares = [events_consumed(worker) for worker in (one, two, three)]
        # Scaled back in with the last third still to be worked through.
        feed(isolated_settings, third)
        two.stop()
        three.stop()
        wait_until(
            lambda: assigned_event_partitions(one) == 4, timeout=60, what="one worker with all"
        )
        expected = scenario.expected()
        actual = wait_for_credits(cluster.sink, expected, timeout=240)
    finally:
        cluster.stop()
    assert actual == expected
    cents = int(sum(c[6] for c in expected if c[1] == "last_click") * 100)
    print(
        f"\n1 -> 3 -> 1 workers ({', '.join(f'{share:.0f}' for share in shares)} events when"
        f" three ran): {len(scenario.history)} + {len(scenario.lines)} events,"
        f" {len(expected)} credit rows, {cents} cents per model equal to the replay,"
        f" {time.monotonic() - began:.0f} s"
    )


@pytest.mark.long
def test_a_worker_frozen_past_its_session_cannot_overwrite_the_new_owner(
    isolated_settings: Settings, tmp_path: Path, scenario: Scenario
) -> None:
    """The frozen worker holds work of a small slice of events when it is stopped; the other
    takes its partitions and works alone; the frozen one wakes up while the new owner holds
    its partitions, then the stream goes on to both."""
    began = time.monotonic()
    first, in_hand, second, third, last = scenario.cut(0.4, 0.42, 0.75, 0.9, 1.0)
    cluster = Cluster(isolated_settings, tmp_path, scenario)
    try:
        zombie, owner = cluster.add("zombie"), cluster.add("owner")
        load_history(isolated_settings, scenario.history)
        feed(isolated_settings, first)
        wait_for_credits(cluster.sink, scenario.expected(len(first)), timeout=240)
        assert events_consumed(zombie) > 0 and events_consumed(owner) > 0, (
            "one worker did all the work"
        )
        before = events_consumed(zombie)
        feed(isolated_settings, in_hand)
        wait_until(
            lambda: events_consumed(zombie) > before, timeout=60, what="the slice reaching it"
        )
        frozen_generation = _generation(zombie)
        fenced_before = _fenced(zombie)
        zombie.pause()  # frozen with work in hand: states, outputs, events not yet saved
        wait_until(
            lambda: (
                _generation(owner) > frozen_generation and assigned_event_partitions(owner) == 4
            ),
            timeout=90,
            what="the other worker owning every partition",
        )
        feed(isolated_settings, second)
        upto_second = len(first) + len(in_hand) + len(second)
        wait_for_credits(cluster.sink, scenario.expected(upto_second), timeout=240)
        zombie.resume()  # believes it owns its partitions until its next heartbeat is refused
        wait_until(
            lambda: _generation(zombie) > frozen_generation + 1,
            timeout=120,
            what="the woken worker rejoining the group",
        )
        fenced = _fenced(zombie) - fenced_before
        feed(isolated_settings, third)
        expected_so_far = scenario.expected(upto_second + len(third))
        actual_so_far = wait_for_credits(cluster.sink, expected_so_far, timeout=240)
        stale = _stale_changelog_records(isolated_settings)

        # What a worker restores from those changelogs is right: a fresh one takes over
        # everything and the last events (refunds and returning shoppers among them) land
        # on the tables it restored.
        for name in ("zombie", "owner"):
            cluster.stages[name].stop()
        fresh = cluster.add("fresh")
        feed(isolated_settings, last)
        expected = scenario.expected()
        actual = wait_for_credits(cluster.sink, expected, timeout=240)
        # The lag gauge lists a worker's partitions once per lag interval after it starts.
        wait_until(
            lambda: assigned_event_partitions(fresh) == 4,
            timeout=30,
            what="the fresh worker owning every partition",
        )
    finally:
        cluster.stop()
    assert actual_so_far == expected_so_far
    assert actual == expected
    cents = int(sum(c[6] for c in expected if c[1] == "last_click") * 100)
    print(
        f"\nzombie (frozen in generation {frozen_generation}, {fenced:.0f} flushes fenced after"
        f" it woke, {stale} stale changelog records): {len(scenario.history)} +"
        f" {len(scenario.lines)} events,"
        f" {len(expected)} credit rows, {cents} cents per model equal to the replay,"
        f" {time.monotonic() - began:.0f} s"
    )


def _fenced(worker: WorkerProcess) -> float:
    return sum(worker.metric("attribution_fenced_flushes_total", stage=stage) for stage in TABLES)


def _stale_changelog_records(settings: Settings) -> int:
    """Records of the tables' changelogs that a restore ignores: written by a generation older
    than one already in their partition, i.e. by a worker that had lost the partition."""

    async def read() -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = [
                TopicPartition(f"{settings.app_id}-{table}-changelog", partition)
                for table in TABLES
                for partition in range(settings.partitions)
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            fences = {table: ChangelogFence() for table in TABLES}
            remaining = {tp for tp in partitions if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, records in batch.items():
                    fence = fences[tp.topic.removeprefix(f"{settings.app_id}-").split("-")[0]]
                    for record in records:
                        if record.offset < ends[tp]:  # markers too: they order generations
                            fence.admits(tp.partition, record_generation(record.headers))
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            return sum(fence.ignored for fence in fences.values())
        finally:
            await consumer.stop()

    return asyncio.run(read())
