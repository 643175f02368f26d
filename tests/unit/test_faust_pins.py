"""The Faust internals that streams/recovery.py and streams/restore.py override or rely on are
pinned to the upstream source they were written against: an upgrade of faust-streaming that
changes one of them fails here, before it can silently undo a fix (docs/reliability.md)."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import faust
import pytest
from faust import Table
from faust.stores.memory import Store
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as aiokafka_driver


def _getter(prop: Any) -> Callable[..., Any]:
    getter: Callable[..., Any] = prop.fget
    return getter


# (what we override or call, its upstream function, sha256 prefix of its source in 0.15.3)
PINNED: list[tuple[str, Callable[..., Any], str]] = [
    (
        "Recovery.on_recovery_completed: re-implemented with the seek before the resume",
        Recovery.on_recovery_completed,
        "6ef567acf072e46d",
    ),
    (
        "Recovery.on_rebalance: extended to note the rebalance count at each assignment",
        Recovery.on_rebalance,
        "aa4d997a1795ceae",
    ),
    (
        "TableManager.recovery: replaced to build our Recovery",
        _getter(TableManager.recovery),
        "f0bf5de78b4c3d23",
    ),
    (
        "aiokafka Consumer._getmany: called with a snapshot of the active partitions",
        aiokafka_driver.Consumer._getmany,
        "f9d47aa9010b5ff2",
    ),
    (
        "Consumer._new_offset: replaced to commit only an unbroken run from the committed offset",
        Consumer._new_offset,
        "1d2c7ea89a7ad4f1",
    ),
    (
        "Consumer.perform_seek: extended to set where each partition's run of acks starts",
        Consumer.perform_seek,
        "0e8c130ff4b0afd8",
    ),
    (
        "Consumer._add_gap: turned off, the stream topics are never compacted",
        Consumer._add_gap,
        "4df2573ded7c1c2c",
    ),
    (
        "Consumer.ack: keeps `_acked`, `_acked_index` and `_committed_offset` as we read them",
        Consumer.ack,
        "5fcf41cf45153475",
    ),
    (
        "memory Store.persisted_offset: answers the offset the bulk restore loaded",
        Store.persisted_offset,
        "fbba5c6544979388",
    ),
    (
        "memory Store.on_rebalance: extended to load new changelog partitions in bulk",
        Store.on_rebalance,
        "a32fbe3c18de4288",
    ),
    (
        "Table._new_store_by_url: replaced to build the bulk-restore store",
        Table._new_store_by_url,
        "343a8125107d3f69",
    ),
]


def test_faust_is_the_version_the_fixes_were_written_for() -> None:
    assert faust.__version__ == "0.15.3"


@pytest.mark.parametrize(("what", "upstream", "digest"), PINNED, ids=[p[0] for p in PINNED])
def test_overridden_faust_internals_are_unchanged_upstream(
    what: str, upstream: Callable[..., Any], digest: str
) -> None:
    source = inspect.getsource(upstream)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == digest, (
        f"{what}: faust's source changed; re-read it against our override before upgrading"
    )
