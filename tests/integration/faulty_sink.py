"""`python -m tests.integration.faulty_sink worker`: a worker whose ClickHouse inserts fail
while the file named by ATTRIBUTION_TEST_SINK_FAILS_WHILE exists.

The embedded engine cannot be taken down on its own, so the fault is injected at the sink
adapter, the one place every insert goes through; a server DSN fails there the same way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from attribution.rows import RowBlock
from sinks.clickhouse import ClickHouseWriter
from streams.cli import main

working_insert = ClickHouseWriter.insert_blocks_now


def insert_unless_failing(self: ClickHouseWriter, blocks: Iterable[RowBlock]) -> int:
    """Stands in for ClickHouseWriter.insert_blocks_now, hence `self`."""
    if Path(os.environ["ATTRIBUTION_TEST_SINK_FAILS_WHILE"]).exists():
        raise ConnectionError("injected fault: ClickHouse refuses writes")
    return working_insert(self, blocks)


if __name__ == "__main__":
    ClickHouseWriter.insert_blocks_now = insert_unless_failing  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
