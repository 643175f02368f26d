"""A worker (`streams.cli worker`) that also writes the CPU time Python's garbage collector took.

python -m bench.pipeline_cpu --worker-module bench.gc_probe --env GC_PROBE_FILE=/tmp/gc.json

Every 2 s the file gets the seconds spent collecting and the collections by generation, so
`bench.pipeline_cpu` can tell the collector's share of a drain from the rest.
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import sys
import threading
import time
from pathlib import Path
from typing import Any

WRITE_EVERY_SECONDS = 2.0


class CollectorClock:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._began
            self.collections[info["generation"]] += 1

    def write_forever(self, path: Path) -> None:
        while True:
            time.sleep(WRITE_EVERY_SECONDS)
            written = path.with_suffix(".tmp")
            written.write_text(
                json.dumps({"seconds": self.seconds, "collections": self.collections})
            )
            written.replace(path)  # a reader never sees half a file


def main() -> None:
    clock = CollectorClock()
    gc.callbacks.append(clock)
    path = Path(os.environ["GC_PROBE_FILE"])
    threading.Thread(target=clock.write_forever, args=(path,), daemon=True).start()
    sys.argv = ["streams.cli", *sys.argv[1:]]
    runpy.run_module("streams.cli", run_name="__main__")


if __name__ == "__main__":
    main()
