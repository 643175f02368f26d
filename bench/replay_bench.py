"""Replay throughput (events/s) and memory per stored touchpoint. Prints figures, asserts nothing.

python -m bench.replay_bench --events 1000000
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from attribution.catalog import Catalog
from attribution.replay import LocalPipeline
from attribution.rules import Rules
from bench import report
from schemas.events import decode_event
from simulation.storefront import Storefront
from streams.heap import cyclic_collection_paused

EVENTS_PER_SHOPPER = 2.9


def _events(target: int) -> tuple[list[bytes], Storefront]:
    """At least `target` events: the shoppers are estimated, then topped up if they fell short."""
    shoppers = int(target / EVENTS_PER_SHOPPER)
    while True:
        storefront = Storefront(datetime(2026, 6, 1, tzinfo=UTC), seed=3, influencers_count=60)
        events = storefront.events(shoppers)
        if len(events) >= target:
            return [json.dumps(event).encode() for event in events], storefront
        shoppers = int(shoppers * target / len(events)) + 1


def state_per_touchpoint(
    lines: list[bytes], catalog: Catalog, sample: int = 200_000
) -> tuple[int, int]:
    """Bytes the journeys and visitors hold (tracemalloc) and the touchpoints they store,
    after replaying the first `sample` events. The replay's outputs (its credit and order rows,
    which a worker sends to ClickHouse rather than keeps) and the order ledgers are let go first."""
    gc.collect()
    tracemalloc.start()
    pipeline = LocalPipeline(catalog, Rules())
    pipeline.feed_all(decode_event(line) for line in lines[: min(len(lines), sample)])
    pipeline.ledgers.clear()
    pipeline.credits.clear()
    pipeline.orders.clear()
    gc.collect()
    state_bytes, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    stored = sum(len(j.clicks) for j in pipeline.journeys.values()) + sum(
        len(v.waiting) for v in pipeline.visitors.values()
    )
    return state_bytes, stored


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/replay.json"))
    args = parser.parse_args()

    began = time.perf_counter()
    lines, storefront = _events(args.events)
    generated = time.perf_counter() - began
    catalog = storefront.static_catalog()

    # Paused as `attribution replay` pauses it; the pause's collection and freeze are timed.
    began = time.perf_counter()
    with cyclic_collection_paused():
        parsed = [decode_event(line) for line in lines]
    decode_seconds = time.perf_counter() - began

    pipeline = LocalPipeline(catalog, Rules())
    began = time.perf_counter()
    with cyclic_collection_paused():
        pipeline.feed_all(parsed)
    attribute_seconds = time.perf_counter() - began
    credit_rows = len(pipeline.final_credits())

    # Nothing of the timed run stays alive, nor its catalog: rates it locked, or ids it kept one
    # copy of, would be shared with the measured run and held outside the measure.
    del parsed, pipeline
    state_bytes, stored = state_per_touchpoint(lines, storefront.static_catalog())

    figures = {
        "machine": {
            "python": sys.version.split()[0],
            "cpus": __import__("os").cpu_count(),
            "platform": platform.platform(),
        },
        "events": len(lines),
        "generate_seconds": round(generated, 2),
        "decode_events_per_second": round(len(lines) / decode_seconds),
        "attribute_events_per_second": round(len(lines) / attribute_seconds),
        "replay_events_per_second": round(len(lines) / (decode_seconds + attribute_seconds)),
        "credit_rows": credit_rows,
        "stored_touchpoints_sampled": stored,
        "state_bytes_per_touchpoint": round(state_bytes / max(stored, 1)),
    }
    report(figures, args.out)


if __name__ == "__main__":
    main()
