"""The collector's pause for batch commands (streams/heap.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.heap import cyclic_collection_paused


@pytest.fixture
def collector_restored() -> Iterator[None]:
    was_enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if was_enabled:
        gc.enable()


@pytest.mark.usefixtures("collector_restored")
def test_a_nested_pause_keeps_the_collector_off_until_the_outer_one_ends() -> None:
    gc.enable()
    with cyclic_collection_paused():
        with cyclic_collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_restored")
def test_a_pause_leaves_a_collector_that_was_off_off() -> None:
    gc.disable()
    with cyclic_collection_paused():
        pass
    assert not gc.isenabled()


@pytest.mark.usefixtures("collector_restored")
def test_what_the_paused_work_built_is_not_walked_again() -> None:
    gc.enable()
    with cyclic_collection_paused():
        built = [[number] for number in range(1_000)]
    walked = {id(tracked) for tracked in gc.get_objects()}
    assert not any(id(item) in walked for item in built)


@pytest.mark.usefixtures("collector_restored")
def test_garbage_from_before_the_pause_is_collected_not_frozen() -> None:
    gc.enable()
    collections: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collections.append(info["collected"])

    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    gc.callbacks.append(record)
    try:
        with cyclic_collection_paused():
            pass
    finally:
        gc.callbacks.remove(record)
    assert collections and collections[0] >= 1
