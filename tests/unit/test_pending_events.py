"""What a flush acknowledges: only events whose effects the save it ran covered."""

from __future__ import annotations

import asyncio
from typing import Any

from agents.batches import PendingEvents


class RecordingStream:
    """The two calls `PendingEvents` makes on a Faust stream, recorded."""

    def __init__(self) -> None:
        self.acked: list[str] = []

    def noack(self) -> RecordingStream:
        return self

    async def ack(self, event: Any) -> None:
        self.acked.append(event)


def test_events_handled_while_a_save_awaits_wait_for_the_next_flush() -> None:
    async def scenario() -> tuple[list[str], list[list[str]]]:
        stream = RecordingStream()
        saved: list[list[str]] = []
        effects: list[str] = []
        release = asyncio.Event()

        async def save() -> bool:
            snapshot = list(effects)
            effects.clear()
            await release.wait()  # Kafka confirming the changelog
            saved.append(snapshot)
            return True

        pending = PendingEvents(stream, max_units=100, save=save)
        effects.append("e1")
        await pending.done("e1")
        flushing = asyncio.create_task(pending.flush())
        await asyncio.sleep(0)  # the save took its snapshot and awaits
        effects.append("e2")
        await pending.done("e2")
        release.set()
        await flushing
        first = list(stream.acked)
        await pending.flush()
        return [*first, "|", *stream.acked[len(first) :]], saved

    acked, saved = asyncio.run(scenario())
    assert acked == ["e1", "|", "e2"]
    assert saved == [["e1"], ["e2"]]


def test_a_failed_save_acknowledges_nothing_and_keeps_the_events_in_order() -> None:
    async def scenario() -> list[str]:
        stream = RecordingStream()
        results = iter([False, True])

        async def save() -> bool:
            return next(results)

        pending = PendingEvents(stream, max_units=100, save=save)
        for event in ("e1", "e2"):
            await pending.done(event)
        assert not await pending.flush()
        assert stream.acked == []
        await pending.done("e3")
        assert await pending.flush()
        return stream.acked

    assert asyncio.run(scenario()) == ["e1", "e2", "e3"]


def test_a_batch_is_full_when_its_events_carry_max_units_rows() -> None:
    async def scenario() -> list[list[str]]:
        stream = RecordingStream()
        acked_at_each_done: list[list[str]] = []

        async def save() -> bool:
            return True

        pending = PendingEvents(stream, max_units=5, save=save)
        for event, rows in (("e1", 3), ("e2", 1), ("e3", 1), ("e4", 4)):
            await pending.done(event, rows)
            acked_at_each_done.append(list(stream.acked))
        return acked_at_each_done

    assert asyncio.run(scenario()) == [[], [], ["e1", "e2", "e3"], ["e1", "e2", "e3"]]
