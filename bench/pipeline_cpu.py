"""What one worker spends per event, in figures a loaded machine does not move much.

python -m bench.pipeline_cpu --events 40000 [--env ATTRIBUTION_DATA_DRIVEN=false] [--profile FILE]
    [--lines stream.jsonl] [--worker-module bench.gc_probe --env GC_PROBE_FILE=/tmp/gc.json]

A worker (`role=all`) is started on fresh topics and left idle for a moment; a storefront
stream is then produced to `events` as a backlog and drained. Reported:

- events/s from the first event produced to every event consumed and every topic committed
  (wall clock: on a shared machine it moves with the load);
- the worker process's CPU seconds (user + system, all threads, from /proc) per 1,000 events
  over the drain, less what it spent idle over the same time; the broker's too;
- the records on each of the app's topics per event after the drain (changelogs included);
- whether the credits equal the replay's.

The pipeline bench's helpers are reused, so the same file runs against an older checkout (copy
it into that checkout's bench/ and run it from there) to compare two commits side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.pipeline_bench import (
    Stream,
    bench_settings,
    credits_match,
    drained,
    peak_rss_mb,
    replay,
    storefront_stream,
    wait_until,
)
from schemas.catalog import read_catalog_dir
from simulation.storefront import Storefront
from sinks.catalog_store import publish_catalog
from streams.producer import produce_events
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.worker_process import WorkerProcess

ROOT = Path(__file__).parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
SETTLE_SECONDS = 5.0
IDLE_SECONDS = 5.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are the stat file's 14th and 15th fields; `fields` starts at the 3rd.
    return (int(fields[11]) + int(fields[12])) / TICKS


def runqueue_seconds(pid: int) -> float:
    """Time the process's threads spent runnable but waiting for a CPU (the machine's load)."""
    waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            waited += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
    return waited / 1e9


def broker_pid() -> int | None:
    pid_file = Path(os.environ.get("KAFKA_PID_FILE", ROOT / ".devstack" / "kafka.pid"))
    try:
        pid = int(pid_file.read_text().split()[0])
        cpu_seconds(pid)
        return pid
    except (OSError, ValueError, IndexError):
        return None


async def records_per_topic(settings: Settings) -> dict[str, int]:
    """Records written to each of the app's topics: the sum of their partitions' end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    await admin.start()
    try:
        topics = sorted(
            topic
            for topic in await consumer.topics()
            if topic.startswith((settings.topic_prefix + ".", settings.app_id + "-"))
        )
        partitions = [
            TopicPartition(described["topic"], partition["partition"])
            for described in await admin.describe_topics(topics)
            for partition in described["partitions"]
        ]
        ends = await consumer.end_offsets(partitions)
    finally:
        await admin.close()
        await consumer.stop()
    counts = dict.fromkeys(topics, 0)
    for partition, end in ends.items():
        counts[partition.topic] += end
    return counts


def collector_seconds(env: dict[str, str]) -> float | None:
    """Seconds the worker's garbage collector ran so far, as bench/gc_probe.py wrote them to
    GC_PROBE_FILE (None when the worker runs without the probe)."""
    path = env.get("GC_PROBE_FILE")
    if not path or not Path(path).exists():
        return None
    seconds: float = json.loads(Path(path).read_text())["seconds"]
    return seconds


def stream_of_lines(path: Path, seed: int, directory: Path) -> Stream:
    """A stream written to a file beforehand (by either checkout's simulator), with this
    checkout's catalog of the same seed and this checkout's replay of it."""
    lines = path.read_bytes().splitlines()
    storefront = Storefront(datetime(2026, 6, 1, tzinfo=UTC), seed=seed, influencers_count=60)
    linear = [row for row in replay(storefront, lines).final_credits() if row.model == "linear"]
    catalog_dir = storefront.write_catalog(directory / f"catalog-{seed}")
    return Stream(
        lines, catalog_dir, len(linear), sum((row.revenue_credit for row in linear), Decimal(0))
    )


def measure(
    stream: Stream, directory: Path, env: dict[str, str], profile: Path | None, module: str
) -> dict[str, Any]:
    settings = bench_settings(directory, "cpu")
    asyncio.run(ensure_topics(settings))
    publish_catalog(settings.redis_url, settings.topic_prefix, read_catalog_dir(stream.catalog_dir))
    worker = WorkerProcess(settings, directory / "cpu.log", module=module, extra_env=env)
    worker.start(ready_timeout=180)
    assert worker.pid is not None
    broker = broker_pid()
    try:
        time.sleep(SETTLE_SECONDS)  # what follows "Ready" (first timers) is not idle
        idle_began, idle_cpu = time.monotonic(), cpu_seconds(worker.pid)
        time.sleep(IDLE_SECONDS)
        idle_rate = (cpu_seconds(worker.pid) - idle_cpu) / (time.monotonic() - idle_began)

        began = time.monotonic()
        worker_before = cpu_seconds(worker.pid)
        broker_before = cpu_seconds(broker) if broker else 0.0
        waited_before = runqueue_seconds(worker.pid)
        collected_before = collector_seconds(env)
        sampler = None
        if profile is not None:
            sampler = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(worker.pid),
                    "--rate",
                    "50",
                    "--format",
                    "raw",
                    "--output",
                    str(profile),
                    "--nonblocking",
                    "--threads",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        asyncio.run(
            produce_events(settings.bootstrap_servers, settings.topic("events"), stream.lines)
        )
        wait_until(lambda: drained([worker], len(stream.lines)), 3600, "backlog drained")
        seconds = time.monotonic() - began
        worker_cpu = cpu_seconds(worker.pid) - worker_before - idle_rate * seconds
        broker_cpu = (cpu_seconds(broker) - broker_before) if broker else None
        waited = runqueue_seconds(worker.pid) - waited_before
        if collected_before is not None:
            time.sleep(2.5)  # the probe writes every 2 s
        collected_after = collector_seconds(env)
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(60)
        matched = True
        try:
            wait_until(lambda: credits_match(worker, stream), 120, "credits equal to the replay")
        except TimeoutError:
            matched = False
        load = os.getloadavg()[0]
        peak_rss = peak_rss_mb(worker)
        stored = {
            dict(labels)["table"]: value
            for (name, labels), value in worker.metrics().items()
            if name == "attribution_sink_rows_total"
        }
    finally:
        worker.stop()
    records = asyncio.run(records_per_topic(settings))
    events = len(stream.lines)
    return {
        "events": events,
        "events_per_second": round(events / seconds),
        "worker_cpu_seconds_per_1k_events": round(1000 * worker_cpu / events, 3),
        "worker_cpu_share_of_one_core": round((worker_cpu + idle_rate * seconds) / seconds, 2),
        "worker_idle_cpu_per_second": round(idle_rate, 3),
        "worker_threads_waiting_for_cpu_share": round(waited / seconds, 2),
        "broker_cpu_seconds_per_1k_events": (
            None if broker_cpu is None else round(1000 * broker_cpu / events, 3)
        ),
        "records_per_event": {
            topic.split(".", 1)[-1]
            if topic.startswith(settings.topic_prefix + ".")
            else topic.removeprefix(settings.app_id + "-"): round(count / events, 3)
            for topic, count in records.items()
        },
        "records_per_event_total": round(sum(records.values()) / events, 3),
        "rows_stored_per_event": {
            table: round(count / events, 3) for table, count in stored.items()
        },
        "rows_stored_per_event_total": round(sum(stored.values()) / events, 3),
        "credits_equal_replay": matched,
        "worker_peak_rss_mb": peak_rss,
        "load_average_1m": load,
        "worker_gc_seconds_per_1k_events": (
            None
            if collected_before is None or collected_after is None
            else round(1000 * (collected_after - collected_before) / events, 3)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--lines", type=Path, help="the stream as JSON lines (the same for two checkouts)"
    )
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the worker")
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of the drain")
    parser.add_argument("--label", default="")
    parser.add_argument(
        "--worker-module", default="streams.cli", help="run instead of streams.cli (bench.gc_probe)"
    )
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    directory = Path(tempfile.mkdtemp(prefix="pipeline-cpu-"))
    stream = (
        stream_of_lines(args.lines, args.seed, directory)
        if args.lines
        else storefront_stream(args.events, seed=args.seed, directory=directory)
    )
    figures = {
        "label": args.label,
        "env": env,
        **measure(stream, directory, env, args.profile, args.worker_module),
    }
    figures["work_dir"] = str(directory)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
