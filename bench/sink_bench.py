"""ClickHouse sink throughput into the embedded engine (rows/s). Prints figures, asserts nothing.

python -m bench.sink_bench --rows 200000

The rows are what the worker's sink receives (credit, order, click and other rows of a
generated storefront, as the stages write them to the rows topic: blocks of up to 500 rows a
record), decoded and written in the sink's batch size.

Besides rows/s it reports CPU per 1,000 rows of the inserts (`insert_blocks_now`), which other
work on the machine does not inflate as it does the wall clock: the inserting thread's own (our
conversion, clickhouse-connect's serialisation, the engine's work on that thread) and the whole
process's (the engine's background threads too, merging the parts the inserts wrote).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clickhouse_connect.driver.client import Client

from agents.emit import Outbox
from attribution.replay import LocalPipeline
from attribution.rows import Row, RowBlock, row_blocks
from attribution.rules import Rules
from bench import report
from schemas.events import decode_event
from simulation.storefront import Storefront
from sinks.clickhouse import ClickHouseWriter, connect
from sinks.migrations import migrate
from streams.codecs import decode_row_record, encode_row_blocks
from streams.settings import Settings


def _records(target: int) -> tuple[list[bytes], Counter[str]]:
    """Rows-topic records of `target` rows from a generated storefront, and the rows per table."""
    emitted: list[Row] = []
    storefront = Storefront(datetime(2026, 6, 1, tzinfo=UTC), seed=3, influencers_count=60)
    pipeline = LocalPipeline(storefront.static_catalog(), Rules(), on_rows=emitted.extend)
    shopper = 0
    while len(emitted) < target:
        for event in storefront.shopper_events(
            shopper, storefront.start + timedelta(minutes=shopper)
        ):
            pipeline.feed(decode_event(json.dumps(event).encode()))
        shopper += 1
    rows, per_record = emitted[:target], Outbox.ITEMS_PER_RECORD
    records = [
        encode_row_blocks(row_blocks(rows[start : start + per_record]))
        for start in range(0, len(rows), per_record)
    ]
    return records, Counter(row.table for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=Settings().sink_batch_rows)
    parser.add_argument("--out", type=Path, default=Path("bench/results/sink.json"))
    args = parser.parse_args()

    records, tables = _records(args.rows)
    rows = sum(tables.values())
    directory = Path(tempfile.mkdtemp(prefix="sink-bench-"))
    try:
        writer = ClickHouseWriter(_client(directory))
        began = time.perf_counter()
        insert_seconds = thread_cpu = process_cpu = 0.0
        held: list[RowBlock] = []
        for number, record in enumerate(records, start=1):
            held += decode_row_record(record)
            if sum(len(block.rows) for block in held) < args.batch and number < len(records):
                continue
            inserting = time.perf_counter()
            thread_began, process_began = time.thread_time(), time.process_time()
            writer.insert_blocks_now(held)
            thread_cpu += time.thread_time() - thread_began
            process_cpu += time.process_time() - process_began
            insert_seconds += time.perf_counter() - inserting
            held = []
        total_seconds = time.perf_counter() - began
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    figures = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "rows": rows,
        "rows_by_table": dict(tables.most_common()),
        "batch_rows": args.batch,
        "average_row_bytes": round(sum(map(len, records)) / rows),
        "sink_rows_per_second": round(rows / total_seconds),
        "insert_only_rows_per_second": round(rows / insert_seconds),
        "insert_thread_cpu_ms_per_1k_rows": round(1000 * thread_cpu / rows * 1000, 2),
        "insert_process_cpu_ms_per_1k_rows": round(1000 * process_cpu / rows * 1000, 2),
    }
    report(figures, args.out)


def _client(directory: Path) -> Client:
    client = connect(f"chdb://{directory / 'clickhouse'}")
    migrate(client)
    return client


if __name__ == "__main__":
    main()
