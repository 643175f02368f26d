"""The whole pipeline on real Kafka and embedded ClickHouse, in one run. Figures, not tests.

python -m bench.pipeline_bench --events 300000

1. a synthetic storefront (Zipf-popular influencers across tiers and platforms; clicks,
   cross-device identifies, codes, orders, refunds, late and duplicate deliveries) is produced
   to a fresh events topic;
2. the raw aiokafka consume ceiling over that topic, and the framework's floor: a plain Faust
   agent that only reads it and commits (bench/faust_floor.py);
3. a worker drains the backlog: sustained events/s end to end (five models, ClickHouse sink),
   peak RSS, and the credits checked against the replay (rows and cents);
4. a second stream at half that rate: p50/p99 from event produced to its credit rows leaving
   the stages (emitted) and to their being stored in ClickHouse, from the workers' histograms;
5. the worker restarted: time to restore its tables from the changelogs it wrote (journeys
   counted); 3 and 4 are run again for `worker --processes 2` (`--processes`);
6. the same events written 100 to a record (JSON arrays, as the collector writes a request),
   drained by one worker and checked again (`--events-per-record`);
7. the same backlog through two `stages` workers and one `sink` (scale-out), checked again;
8. restore at scale: the tables the replay builds for a storefront of at least 100k journeys
   (visitors, ledgers and journeys, encoded as the stages encode them) are written to a fresh
   app's changelogs, and a worker started on it is timed until its tables are restored.

Prints a table and writes bench/results/pipeline.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.emit import key_partition
from attribution.identity import visitor_to_wire
from attribution.journey import journey_to_wire
from attribution.ledger import ledger_to_wire
from attribution.replay import LocalPipeline
from attribution.rules import Rules
from bench import report
from bench.replay_bench import state_per_touchpoint
from schemas.catalog import read_catalog_dir
from schemas.events import InvalidEvent, decode_event, encode_record
from simulation.storefront import Storefront
from sinks.catalog_store import publish_catalog
from streams.codecs import encode
from streams.producer import produce_events
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.worker_process import Samples, WorkerProcess, free_port

ROOT = Path(__file__).parents[1]
EVENTS_PER_SHOPPER = 2.8
# A worker reads a backlog a fetch per partition at a time (up to 1 MB, thousands of events),
# so its partitions drift apart. On these sparse histories (months in a few thousand events a
# partition) that is weeks of event time, beyond the default allowed lateness, and credits may
# then depend on arrival order by design (docs/reliability.md: 50 to 1,021 late events and
# unequal credits in such drains). The bench's workers and replay allow lateness over the
# whole history: any interleaving must then give the replay's credits, with no late event.
BACKLOG_LATENESS_DAYS = 400
CREDITS_SQL = """
    SELECT count(), toString(sum(revenue_credit)) FROM credits FINAL
    WHERE NOT is_deleted AND model = 'linear'
"""


@dataclass(frozen=True)
class Stream:
    lines: list[bytes]
    catalog_dir: Path
    expected_rows: int
    expected_revenue: Decimal


def replay(storefront: Storefront, lines: list[bytes]) -> LocalPipeline:
    """The replay over `lines`, invalid ones skipped as the pipeline dead-letters them."""
    rules = Rules(allowed_lateness=timedelta(days=BACKLOG_LATENESS_DAYS))
    pipeline = LocalPipeline(storefront.static_catalog(), rules)
    for line in lines:
        try:
            pipeline.feed(decode_event(line))
        except InvalidEvent:
            continue
    return pipeline


def storefront_stream(events: int, seed: int, directory: Path) -> Stream:
    """At least `events` events of one storefront, and what the replay credits for them."""
    shoppers = int(events / EVENTS_PER_SHOPPER)
    while True:
        storefront = Storefront(datetime(2026, 6, 1, tzinfo=UTC), seed=seed, influencers_count=60)
        generated = storefront.events(shoppers)
        if len(generated) >= events:
            break
        shoppers = int(shoppers * events / len(generated)) + 1
    times = [datetime.fromisoformat(event["occurred_at"]) for event in generated]
    if max(times) - min(times) >= timedelta(days=BACKLOG_LATENESS_DAYS):
        raise ValueError("the history spans more than the bench's allowed lateness")
    lines = [json.dumps(event).encode() for event in generated]
    pipeline = replay(storefront, lines)
    linear = [row for row in pipeline.final_credits() if row.model == "linear"]
    catalog_dir = storefront.write_catalog(directory / f"catalog-{seed}")
    return Stream(
        lines, catalog_dir, len(linear), sum((r.revenue_credit for r in linear), Decimal(0))
    )


def bench_settings(directory: Path, name: str, **overrides: Any) -> Settings:
    unique = f"bench{int(time.time())}{name}"
    return Settings(
        data_dir=directory / unique,
        topic_prefix=unique,
        app_id=unique,
        web_port=free_port(),
        log_level="info",
        lag_interval_seconds=1.0,
        sweep_interval_seconds=5.0,
        business_metrics_seconds=3600.0,
        **{"allowed_lateness_days": BACKLOG_LATENESS_DAYS, **overrides},
    )


async def consume_ceiling(settings: Settings, count: int) -> float:
    """Raw aiokafka: how fast the events topic is read back, records/s."""
    consumer = AIOKafkaConsumer(
        settings.topic("events"),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        read = 0
        began = time.perf_counter()
        while read < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            read += sum(len(records) for records in batch.values())
        return read / (time.perf_counter() - began)
    finally:
        await consumer.stop()


def summed(samples: list[Samples], name: str, **labels: str) -> float:
    """A metric summed over processes, and over the values of the labels not given."""
    return sum(
        value
        for sample in samples
        for (sample_name, sample_labels), value in sample.items()
        if sample_name == name and labels.items() <= dict(sample_labels).items()
    )


def drained(workers: list[WorkerProcess], events: int) -> bool:
    """Every event consumed and every input topic (events, commands, rows) committed."""
    samples = [sample for worker in workers for sample in worker.metrics_of_every_process()]
    consumed = summed(samples, "attribution_events_consumed_total")
    return consumed >= events and summed(samples, "attribution_consumer_lag") == 0


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what} not reached in {timeout} s")
        time.sleep(0.25)
    return time.monotonic() - began


def late_events(worker: WorkerProcess) -> int:
    """Events later than the allowed lateness, counted at ingest by every process."""
    return round(summed(worker.metrics_of_every_process(), "attribution_late_events_total"))


def credits_match(sink: WorkerProcess, stream: Stream) -> bool:
    rows, revenue = sink.sql(CREDITS_SQL)[0]
    return (
        int(str(rows)) == stream.expected_rows and Decimal(str(revenue)) == stream.expected_revenue
    )


def peak_rss_mb(worker: WorkerProcess) -> float:
    """The peak resident memory of the worker and, for a supervised service, its processes."""
    pids = [worker.pid]
    for children in Path(f"/proc/{worker.pid}/task").glob("*/children"):
        pids += [int(pid) for pid in children.read_text().split()]
    kilobytes = 0
    for pid in pids:
        match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        kilobytes += int(match.group(1)) if match else 0
    return round(kilobytes / 1024, 1)


def histogram(worker: WorkerProcess, name: str) -> dict[float, float]:
    """A histogram's cumulative buckets, summed over the processes of a service."""
    buckets: dict[float, float] = {}
    for samples in worker.metrics_of_every_process():
        for (sample, labels), value in samples.items():
            if sample == f"{name}_bucket":
                bound = float(dict(labels)["le"])
                buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def table_keys(worker: WorkerProcess, table: str) -> int:
    return round(summed(worker.metrics_of_every_process(), "attribution_table_keys", table=table))


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Prometheus' histogram_quantile over the buckets' growth between two scrapes."""
    bounds = sorted(after)
    counts = [after[bound] - before.get(bound, 0.0) for bound in bounds]
    total = counts[-1]
    if total == 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-9)
        lower, below = bound, cumulative
    return lower


async def produce_paced(settings: Settings, lines: list[bytes], rate: float) -> float:
    """Send `lines` at `rate` events/s in 50 ms ticks (record timestamp = send time)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5
    )
    await producer.start()
    try:
        began = time.perf_counter()
        per_tick = max(int(rate / 20), 1)
        for start in range(0, len(lines), per_tick):
            for line in lines[start : start + per_tick]:
                await producer.send(settings.topic("events"), line)
            due = began + (start + per_tick) / rate
            await asyncio.sleep(max(due - time.perf_counter(), 0))
        await producer.flush()
        return len(lines) / (time.perf_counter() - began)
    finally:
        await producer.stop()


def recovery_seconds(log: Path) -> float | None:
    """From the recovery service starting to 'Restore complete!' in the last start of a
    worker's log: joining the group, loading the changelogs and reading their tails."""
    stamp = r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]"
    stamps = re.findall(
        stamp + r".*(Recovery\]: Starting|Restore complete!)", log.read_text(errors="replace")
    )
    begun = [s for s, what in stamps if what.startswith("Recovery")]
    done = [s for s, what in stamps if what.startswith("Restore")]
    if not begun or not done or done[-1] < begun[-1]:
        return None

    def parse(logged: str) -> datetime:
        # Both stamps are the worker's local time; only their difference matters.
        return datetime.strptime(logged + "+0000", "%Y-%m-%d %H:%M:%S,%f%z")

    return round((parse(done[-1]) - parse(begun[-1])).total_seconds(), 2)


def one_service(
    stream: Stream,
    latency_stream: Stream,
    directory: Path,
    seconds: float,
    processes: int,
    latency_rate: float | None = None,
) -> dict[str, Any]:
    """A worker of `processes` stage processes (and a sink when more than one) drains the
    backlog, then takes a second stream at half that rate (or at `latency_rate`); a single
    process is then restarted on the changelogs it wrote (overwrites and the sweeps'
    tombstones) and its restore timed."""
    settings = bench_settings(directory, f"p{processes}")
    asyncio.run(ensure_topics(settings))
    publish_catalog(settings.redis_url, settings.topic_prefix, read_catalog_dir(stream.catalog_dir))
    began = time.perf_counter()
    asyncio.run(produce_events(settings.bootstrap_servers, settings.topic("events"), stream.lines))
    produce_rate = len(stream.lines) / (time.perf_counter() - began)
    figures: dict[str, Any] = {}
    if processes == 1:
        ceiling = asyncio.run(consume_ceiling(settings, len(stream.lines)))
        floor = faust_floor(settings, len(stream.lines))
        figures.update(
            {
                "raw_produce_events_per_second": round(produce_rate),
                "raw_consume_events_per_second": round(ceiling),
                "faust_floor_events_per_second": floor,
            }
        )
    worker = WorkerProcess(settings, directory / f"p{processes}.log", processes=processes)
    worker.start(ready_timeout=180)
    try:
        drain = wait_until(lambda: drained([worker], len(stream.lines)), 3600, "backlog drained")
        throughput = len(stream.lines) / drain
        wait_until(lambda: credits_match(worker, stream), 300, "credits equal to the replay")
        figures["pipeline_events_per_second"] = round(throughput)
        figures["credits_equal_replay"] = True
        figures["late_events"] = late_events(worker)
        figures["credit_rows_linear"] = stream.expected_rows

        # Half load: a new storefront (other ids) at half the sustained rate. The wait is
        # split where the rows leave the stages (emitted) and where ClickHouse has them.
        names = {
            "emitted": "attribution_credit_emitted_latency_seconds",
            "stored": "attribution_credit_stored_latency_seconds",
        }
        before = {stage: histogram(worker, name) for stage, name in names.items()}
        rate = latency_rate or throughput / 2
        count = min(len(latency_stream.lines), int(rate * seconds))
        publish_catalog(
            settings.redis_url, settings.topic_prefix, read_catalog_dir(latency_stream.catalog_dir)
        )
        sent_rate = asyncio.run(produce_paced(settings, latency_stream.lines[:count], rate))
        wait_until(lambda: drained([worker], len(stream.lines) + count), 600, "half load drained")
        time.sleep(2 * settings.sink_batch_seconds)
        figures["half_load_events_per_second"] = round(sent_rate)
        for stage, name in names.items():
            after = histogram(worker, name)
            for q in (0.5, 0.99):
                quantile_seconds = quantile(q, before[stage], after)
                figures[f"latency_{stage}_p{round(q * 100)}_seconds"] = round(quantile_seconds, 3)
        figures["worker_peak_rss_mb"] = peak_rss_mb(worker)
        wait_until(lambda: table_keys(worker, "journeys") > 0, 60, "sweep")
        journeys = table_keys(worker, "journeys")
    finally:
        worker.stop()

    if processes == 1:
        worker.start(ready_timeout=600)
        wait_until(lambda: recovery_seconds(worker.log_path) is not None, 600, "tables restored")
        figures["table_restore_seconds"] = recovery_seconds(worker.log_path)
        figures["journeys_restored"] = journeys
        worker.stop()
        figures["pipeline_share_of_raw_consume"] = round(throughput / ceiling, 4)
        figures["pipeline_share_of_faust_floor"] = round(throughput / floor, 4)
    return figures


def faust_floor(settings: Settings, records: int) -> int:
    """Records/s of a plain Faust agent that only reads the events topic and commits."""
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.faust_floor",
            "--bootstrap",
            settings.bootstrap_servers,
            "--topic",
            settings.topic("events"),
            "--records",
            str(records),
        ],
        capture_output=True,
        check=True,
        timeout=3600,
    )
    # Faust's worker sends print() through its logging, so the figure comes after a log prefix.
    [line] = [
        line
        for line in (finished.stdout + finished.stderr).decode().splitlines()
        if '"records_per_second"' in line
    ]
    return int(json.loads(line[line.index("{") :])["records_per_second"])


def batched_records(stream: Stream, directory: Path, per_record: int) -> dict[str, Any]:
    """The same events written `per_record` to a record (JSON arrays, as the collector writes a
    request), drained by one worker."""
    settings = bench_settings(directory, "batched")
    asyncio.run(ensure_topics(settings))
    publish_catalog(settings.redis_url, settings.topic_prefix, read_catalog_dir(stream.catalog_dir))
    records = [
        encode_record(stream.lines[start : start + per_record])
        for start in range(0, len(stream.lines), per_record)
    ]
    asyncio.run(produce_events(settings.bootstrap_servers, settings.topic("events"), records))
    worker = WorkerProcess(settings, directory / "batched.log")
    worker.start(ready_timeout=180)
    try:
        drain = wait_until(lambda: drained([worker], len(stream.lines)), 3600, "backlog drained")
        wait_until(lambda: credits_match(worker, stream), 300, "credits equal to the replay")
    finally:
        worker.stop()
    return {
        "batched_events_per_record": per_record,
        "batched_pipeline_events_per_second": round(len(stream.lines) / drain),
        "batched_credits_equal_replay": True,
    }


def two_workers(stream: Stream, directory: Path) -> dict[str, Any]:
    settings = bench_settings(directory, "two")
    asyncio.run(ensure_topics(settings))
    publish_catalog(settings.redis_url, settings.topic_prefix, read_catalog_dir(stream.catalog_dir))
    asyncio.run(produce_events(settings.bootstrap_servers, settings.topic("events"), stream.lines))
    roles = [("sink", "sink"), ("stages", "first"), ("stages", "second")]
    workers = [
        WorkerProcess(
            settings.model_copy(
                update={"role": role, "data_dir": directory / name, "web_port": free_port()}
            ),
            directory / f"{name}.log",
        )
        for role, name in roles
    ]
    for worker in workers:
        worker.start(ready_timeout=180)
    try:
        drain = wait_until(lambda: drained(workers, len(stream.lines)), 3600, "backlog drained")
        matched = True
        try:
            wait_until(lambda: credits_match(workers[0], stream), 300, "credits")
        except TimeoutError:
            matched = False
        shares = [round(w.metric("attribution_events_consumed_total")) for w in workers[1:]]
        rss = [peak_rss_mb(worker) for worker in workers]
    finally:
        for worker in workers:
            worker.stop()
    return {
        "two_workers_events_per_second": round(len(stream.lines) / drain),
        "two_workers_events_each": shares,
        "two_workers_credits_equal_replay": matched,
        "two_workers_peak_rss_mb": rss,
    }


def replayed_tables(journeys: int, seed: int) -> tuple[Storefront, LocalPipeline, int]:
    """A storefront of at least `journeys` customers' journeys, the replay's tables for it, and
    how many events it took."""
    shoppers = journeys
    while True:
        storefront = Storefront(datetime(2026, 6, 1, tzinfo=UTC), seed=seed, influencers_count=60)
        lines = [json.dumps(event).encode() for event in storefront.events(shoppers)]
        pipeline = replay(storefront, lines)
        if len(pipeline.journeys) >= journeys:
            return storefront, pipeline, len(lines)
        shoppers = int(shoppers * journeys / max(len(pipeline.journeys), 1) * 1.02) + 1


async def write_changelogs(settings: Settings, pipeline: LocalPipeline) -> dict[str, int]:
    """Each table's states as the stages write them: raw key, encoded wire state, in the
    partition the key hashes to, on a compacted changelog topic named as Faust names it."""
    tables = {
        "visitors": {key: visitor_to_wire(v) for key, v in pipeline.visitors.items()},
        "ledgers": {key: ledger_to_wire(ledger) for key, ledger in pipeline.ledgers.items()},
        "journeys": {key: journey_to_wire(j) for key, j in pipeline.journeys.items()},
    }
    topics = {table: f"{settings.app_id}-{table}-changelog" for table in tables}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(topic, settings.partitions, 1, topic_configs={"cleanup.policy": "compact"})
                for topic in topics.values()
            ]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=20
    )
    await producer.start()
    try:
        for table, states in tables.items():
            topic = topics[table]
            for key, wire in states.items():
                raw_key = key.encode()
                partition = key_partition(raw_key, settings.partitions)
                await producer.send(topic, encode(wire), key=raw_key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    return {table: len(states) for table, states in tables.items()}


def restore_at_scale(journeys: int, directory: Path) -> dict[str, Any]:
    storefront, pipeline, events = replayed_tables(journeys, seed=7)
    settings = bench_settings(directory, "restore")
    asyncio.run(ensure_topics(settings))
    catalog_dir = storefront.write_catalog(directory / "catalog-7")
    publish_catalog(settings.redis_url, settings.topic_prefix, read_catalog_dir(catalog_dir))
    written = asyncio.run(write_changelogs(settings, pipeline))
    worker = WorkerProcess(settings, directory / "restore.log")
    worker.start(ready_timeout=600)
    try:
        wait_until(lambda: recovery_seconds(worker.log_path) is not None, 600, "tables restored")
        wait_until(
            lambda: (
                worker.metric("attribution_table_keys", table="journeys") >= written["journeys"]
            ),
            120,
            "every journey in the table",
        )
        rss = peak_rss_mb(worker)
    finally:
        worker.stop()
    return {
        "restore_at_scale_seconds": recovery_seconds(worker.log_path),
        "restore_at_scale_keys": written,
        "restore_at_scale_events_behind": events,
        "restore_at_scale_peak_rss_mb": rss,
    }


def kafka_version() -> str:
    jars = sorted((ROOT / ".devstack" / "kafka" / "libs").glob("kafka_2.13-*.jar"))
    return jars[0].stem.removeprefix("kafka_2.13-") if jars else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument(
        "--processes",
        type=int,
        nargs="+",
        default=[1, 2],
        help="run the drain and half load once per count of stage processes (1: one process)",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="events/s of the latency stream (default: half the drain's rate); a fixed rate "
        "compares two commits at the same load, where half of a noisy drain would not",
    )
    parser.add_argument("--skip-scale-out", action="store_true")
    parser.add_argument(
        "--events-per-record",
        type=int,
        default=100,
        help="also drain the stream written this many events to a record (1: skip)",
    )
    parser.add_argument("--restore-journeys", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/pipeline.json"))
    args = parser.parse_args()

    # Kept afterwards: the workers' logs are the first thing to read when a figure surprises.
    directory = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    stream = storefront_stream(args.events, seed=5, directory=directory)
    latency_stream = storefront_stream(args.events // 2, seed=6, directory=directory)
    state_bytes, stored = state_per_touchpoint(
        stream.lines,
        Storefront(datetime(2026, 6, 1, tzinfo=UTC), seed=5, influencers_count=60).static_catalog(),
    )
    figures: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "kafka": kafka_version(),
        },
        "events": len(stream.lines),
        "state_bytes_per_touchpoint": round(state_bytes / max(stored, 1)),
    }
    for processes in args.processes:
        measured = one_service(
            stream, latency_stream, directory, args.latency_seconds, processes, args.latency_rate
        )
        prefix = "" if processes == 1 else f"processes_{processes}_"
        figures.update({prefix + name: value for name, value in measured.items()})
    if args.events_per_record > 1:
        figures.update(batched_records(stream, directory, args.events_per_record))
    if not args.skip_scale_out:
        figures.update(two_workers(stream, directory))
    if args.restore_journeys:
        figures.update(restore_at_scale(args.restore_journeys, directory))
    figures["work_dir"] = str(directory)
    report(figures, args.out)


if __name__ == "__main__":
    main()
