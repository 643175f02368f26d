"""Acknowledging events only once their effects are saved, a batch at a time.

Agents read one event at a time (Faust's plainest, best-trodden path) from a stream
with automatic acknowledgement turned off. What an event changes (table state, rows
for ClickHouse) is held until a flush saves it; only then are the events behind it
acknowledged, so Kafka commits an offset only after everything it led to is saved.
A flush happens once the events count for `max_units` (one each, or the rows they carry) and every
`within_seconds`.

Faust's own `take_events` was not used: it acknowledges a batch in a `finally`
(even when the agent failed or was stopped halfway), and under load it lost whole
batches in our restart test, acknowledging events that no agent ever saw.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger(__name__)

# Saves what the events marked done so far changed; must take its snapshot before it first
# awaits, since the agent goes on handling events while it does.
SaveFn = Callable[[], Awaitable[bool]]


class PendingEvents:
    """Processed events waiting for their effects to be saved before they are acknowledged."""

    def __init__(self, stream: Any, max_units: int, save: SaveFn) -> None:
        self._stream = stream.noack()
        self._max_units = max_units
        self._save = save
        self._events: list[Any] = []
        self._units = 0
        self._lock = asyncio.Lock()

    def events(self) -> AsyncIterator[Any]:
        """The agent's events, one at a time, acknowledged only by `flush`."""
        events: AsyncIterator[Any] = self._stream.events()
        return events

    async def done(self, event: Any, units: int = 1) -> None:
        """Mark an event processed, counting for `units` (rows it carried, say) towards a full
        batch; a full batch is saved before reading more (back-pressure)."""
        self._events.append(event)
        self._units += units
        backoff = 0.1
        while self._units >= self._max_units and not await self.flush():
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def flush(self) -> bool:
        """Save, then acknowledge what was saved; False (nothing acknowledged) if saving failed."""
        async with self._lock:
            # Taken before saving: events the agent handles while the save awaits belong to
            # the next flush, with the effects they add meanwhile.
            events, self._events = self._events, []
            units, self._units = self._units, 0
            if not await self._save():
                self._events = events + self._events
                self._units += units
                return False
            for event in events:
                await self._stream.ack(event)
            return True


@asynccontextmanager
async def pending_events(
    stream: Any, max_units: int, within_seconds: float, save: SaveFn
) -> AsyncIterator[PendingEvents]:
    """A `PendingEvents` over the agent's `stream`, flushed every `within_seconds` while the
    agent runs, and at its end."""
    pending = PendingEvents(stream, max_units, save)

    async def flush_periodically() -> None:
        while True:
            await asyncio.sleep(within_seconds)
            try:
                await pending.flush()
            except Exception:  # the next tick, or the next full batch, tries again
                log.exception("flushing pending events failed")

    flusher = asyncio.create_task(flush_periodically())
    try:
        yield pending
    finally:
        flusher.cancel()
        # Whatever was fully processed is saved now rather than processed again after a
        # restart; if saving fails, those events simply come again.
        await pending.flush()
