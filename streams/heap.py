"""How long-running and batch commands treat Python's cyclic garbage collector.

The pipeline's objects (journeys, visitors, ledgers, rows, commands) form no reference cycles:
reference counting frees them. The cyclic collector still walks every tracked object it holds
whenever allocations outnumber frees, and a batch run that builds the state of a whole history
allocates far more than it frees, so the walks grow with the history (a third of a scenario's
time in the session 16 profile, docs/benchmarks.md) and free nothing.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def freeze_startup_heap() -> None:
    """Never walk the startup heap again: what is alive before the worker runs (modules,
    Faust's app, the topology, the catalog) stays for the process's life, yet every full
    collection walked it, some 400,000 objects, every few thousand events (session 11 in
    docs/benchmarks.md). It is collected once and moved out of the collector's generations;
    everything allocated later is collected as before."""
    gc.collect()
    gc.freeze()


@contextmanager
def cyclic_collection_paused() -> Iterator[None]:
    """A batch command's work without the cyclic collector's walks; for the entry points of
    batch commands only (`gc.disable` holds for every thread of the process).

    Garbage from before is collected first; at the end everything alive is frozen (`gc.freeze`):
    with the collector back on, its first collections would otherwise walk all the work built
    once more, and again at each older generation. Frozen objects are still freed by reference
    counting; a cycle among them is not, until the process ends. The pipeline's work makes none
    (tests/unit/test_scenarios.py checks that attributing a part makes none); what else a
    command does while paused (reading ClickHouse, writing a report) may, which is why the pause
    is for commands whose process ends with them, never for the worker."""
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
