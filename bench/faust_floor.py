"""The framework's floor: a plain Faust agent that only reads a topic and commits.

python -m bench.faust_floor --bootstrap 127.0.0.1:19092 --topic T --records N

Prints one JSON line, {"records": N, "seconds": s, "records_per_second": r}, timed from the
first record to the N-th, and exits. The pipeline bench runs it on the same topic as the
pipeline, so the pipeline's rate can be read as a share of what Faust itself can do here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from typing import Any

import faust


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True)
    args = parser.parse_args()

    app = faust.App(
        f"faust-floor-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="faust-floor-"),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        stream_wait_empty=False,
    )
    began: float | None = None
    read = 0

    @app.agent(app.topic(args.topic))
    async def floor(stream: Any) -> None:
        nonlocal began, read
        async for _ in stream:
            if began is None:
                began = time.perf_counter()
            read += 1
            if read == args.records:
                seconds = time.perf_counter() - began
                figures = {
                    "records": read,
                    "seconds": round(seconds, 3),
                    "records_per_second": round(read / seconds),
                }
                print(json.dumps(figures), flush=True)
                # The figure is out; a clean Faust shutdown would only add seconds to the run.
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
