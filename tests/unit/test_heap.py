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
    with cyclic_collection_paused():
        built = [[number] for number in range(10_000)]
    assert gc.get_freeze_count() >= len(built)
