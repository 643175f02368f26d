"""The keyed stages' work per event alone, without Kafka, Faust or ClickHouse.

python -m bench.stages_cpu --lines stream.jsonl [--seed 5] [--repeat 3]

The stream's events are routed as ingest routes them and their commands folded by the stages'
processors (`agents/processor.py`, the code the worker runs) over in-memory tables, each
command record handed to the processor of its topic and every processor flushed as the worker
would (a batch full, or nothing left to read). A flush's batches go straight back in: commands
to their stage, changelogs and rows dropped once encoded. Reported: the process's CPU seconds
per 1,000 events of each pass (each starts empty), the keys held at the end per stage, and
how many states each stage encoded and decoded per 1,000 events (a pass of its own). The CPU
figures still move with a shared machine's load; the counts do not move at all.

Like `bench.pipeline_cpu`, the file runs from an older checkout when copied into its bench/.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from agents.emit import Batch, Outbox, Routes
from agents.processor import MemoryStates, Stage, StageProcessor
from agents.stages import JOURNEYS, LEDGERS, TRAFFIC, VISITORS
from attribution.catalog import Catalog
from attribution.routing import route_event
from schemas.events import RefusedEvent, decode_record
from simulation.storefront import Storefront
from streams.codecs import decode
from streams.metrics import Metrics
from streams.settings import Settings

PARTITIONS = 4
ROUTES = Routes.unprefixed(PARTITIONS)
STAGES: dict[str, Stage[Any]] = {
    ROUTES.traffic_commands: TRAFFIC,
    ROUTES.visitor_commands: VISITORS,
    ROUTES.order_commands: LEDGERS,
    ROUTES.journey_commands: JOURNEYS,
}


class Holds:
    def holds(self, generation: int) -> bool:
        return True


class Loopback:
    """A `Writer` whose batches are read back by the stages."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def write(self, batches: Any) -> None:
        self.batches.extend(batches)


async def _acknowledge(event: Any) -> None:
    return None


def counting(stages: dict[str, Stage[Any]], calls: Counter[str]) -> dict[str, Stage[Any]]:
    """The stages, each counting its states' encodings and decodings in `calls`."""

    def counted(name: str, function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def call(argument: Any) -> Any:
            calls[name] += 1
            return function(argument)

        return call

    return {
        topic: dataclasses.replace(
            stage,
            to_wire=counted(f"{stage.name} encoded", stage.to_wire),
            from_wire=counted(f"{stage.name} decoded", stage.from_wire),
        )
        for topic, stage in stages.items()
    }


async def drain(
    lines: list[bytes], catalog: Catalog, batch_events: int, stages: dict[str, Stage[Any]]
) -> dict[str, int]:
    """Fold the stream through the stages; the keys each one holds at the end."""
    settings = Settings()
    metrics = Metrics(CollectorRegistry())
    loopback = Loopback()
    stores = {topic: MemoryStates() for topic in STAGES}
    processors = {
        topic: StageProcessor(
            stage,
            rules=settings.rules,
            generation=1,
            partitions=range(PARTITIONS),
            store=stores[topic],
            changelog_topic=f"{stage.name}-changelog",
            outbox=Outbox(ROUTES),
            writer=loopback,
            fence=Holds(),
            ack=_acknowledge,
            metrics=metrics,
            max_units=batch_events,
        )
        for topic, stage in stages.items()
    }
    ingest = Outbox(ROUTES)
    for start in range(0, len(lines), batch_events):
        for line in lines[start : start + batch_events]:
            for event in decode_record(line):
                if isinstance(event, RefusedEvent):
                    continue
                routed = route_event(event, catalog)
                ingest.routed_commands(routed)
        loopback.batches.extend(ingest.take())
        while loopback.batches:
            batches, loopback.batches = loopback.batches, []
            for batch in batches:
                processor = processors.get(batch.topic)
                if processor is None:
                    continue
                for _, value in batch.records:
                    assert value is not None
                    processor.submit(None, batch.partition, decode(value))
                    if processor.full:
                        await processor.flush()
            for processor in processors.values():
                await processor.flush()
    return {
        processor.stage.name: stores[topic].state_count() for topic, processor in processors.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the stream's refused refunds, dead-lettered
    lines = args.lines.read_bytes().splitlines()
    storefront = Storefront(datetime(2026, 6, 1, tzinfo=UTC), seed=args.seed, influencers_count=60)
    catalog = storefront.static_catalog()
    batch_events = Settings().stage_batch_events
    passes = []
    keys: dict[str, int] = {}
    for _ in range(args.repeat):
        began = time.process_time()
        keys = asyncio.run(drain(lines, catalog, batch_events, STAGES))
        passes.append(round((time.process_time() - began) / len(lines) * 1000, 4))
    calls: Counter[str] = Counter()
    asyncio.run(drain(lines, catalog, batch_events, counting(STAGES, calls)))
    figures = {
        "label": args.label,
        "events": len(lines),
        "cpu_s_per_1k": passes,
        "keys": keys,
        "states_per_1k_events": {
            name: round(count / len(lines) * 1000, 1) for name, count in sorted(calls.items())
        },
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
