"""Acknowledging events only once their effects are saved, a batch at a time.

Agents read one event at a time (Faust's plainest, best-trodden path) from a stream
with automatic acknowledgement turned off. What an event changes (table state, rows
for ClickHouse) is held until a flush saves it; only then are the events behind it
acknowledged, so Kafka commits an offset only after everything it led to is saved.
A flush happens once the events count for `max_units` (one each, or the rows they carry) and every
`within_seconds`, at a fixed rate (a save's duration is not added to the interval).

On a revocation the events held are flushed while Faust still waits for the revocation to be
handled, and what could not be saved is forgotten, not acknowledged: Faust then drops its
bookkeeping of the revoked partitions, whose next owner reads them again from the last commit,
and an acknowledgement that arrives after that could let a later commit skip past them. What
they led to (an ingest outbox) is dropped with them, and where the stages hold a `GroupLease`
(streams/fencing.py) nothing is saved while the group has not confirmed the assignment lately.

Faust's own `take_events` was not used: it acknowledges a batch in a `finally`
(even when the agent failed or was stopped halfway), and under load it lost whole
batches in our restart test, acknowledging events that no agent ever saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from agents.emit import Outbox
from streams.fencing import GroupLease

log = logging.getLogger(__name__)

# Saves what the events marked done so far changed; must take its snapshot before it first
# awaits, since the agent goes on handling events while it does.
SaveFn = Callable[[], Awaitable[bool]]


class PendingEvents:
    """Processed events waiting for their effects to be saved before they are acknowledged."""

    def __init__(
        self,
        stream: Any,
        max_units: int,
        save: SaveFn,
        *,
        may_write: Callable[[], bool] | None = None,
        discard: Callable[[], None] | None = None,
    ) -> None:
        self._stream = stream.noack()
        self._may_write = may_write
        self._discard = discard
        self._max_units = max_units
        self._save = save
        self._events: list[Any] = []
        self._units = 0
        self._lock = asyncio.Lock()
        self._revocations = 0

    def forget(self) -> None:
        """The partitions were revoked: the events held will never be acknowledged here."""
        self._revocations += 1
        self._events, self._units = [], 0
        if self._discard is not None:
            self._discard()

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
            if self._events and self._may_write is not None and not self._may_write():
                return False  # fenced: the group has not confirmed lately that we own these
            # Taken before saving: events the agent handles while the save awaits belong to
            # the next flush, with the effects they add meanwhile.
            events, self._events = self._events, []
            units, self._units = self._units, 0
            revocations = self._revocations
            if not await self._save():
                if revocations == self._revocations:
                    self._events = events + self._events
                    self._units += units
                return False
            if revocations != self._revocations:
                return True  # saved, but revoked meanwhile: those acknowledgements would be stale
            for event in events:
                await self._stream.ack(event)
            return True


def next_tick(due: float, now: float, interval: float) -> float:
    """When the timer flushes next, having flushed for the tick `due` and finished at `now`.

    A fixed rate, not a fixed pause after each save: an event read just after a save began
    waits `interval`, not that plus the save. A save that overran the interval is followed by
    the next at once, not by a burst of the ticks it overran."""
    return max(due + interval, now)


@asynccontextmanager
async def pending_events(
    stream: Any, max_units: int, within_seconds: float, save: SaveFn
) -> AsyncIterator[PendingEvents]:
    """A `PendingEvents` over the agent's `stream`, flushed every `within_seconds` while the
    agent runs, and at its end."""
    app = getattr(stream, "app", None)
    lease = None if app is None else GroupLease.existing(app)
    outbox = getattr(save, "__self__", None)  # ingest saves with its outbox's `send`
    pending = PendingEvents(
        stream,
        max_units,
        save,
        may_write=None if lease is None else lease.current,
        discard=outbox.clear if isinstance(outbox, Outbox) else None,
    )

    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # Faust awaits this before it lets the partitions go, so acknowledgements made here
        # still count: what is fully processed is saved (a shutdown loses nothing it held),
        # and only what could not be saved is forgotten.
        await pending.flush()
        pending.forget()

    if app is not None:
        app.on_partitions_revoked.connect(on_revoked)

    async def flush_periodically() -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + within_seconds
        while True:
            await asyncio.sleep(due - loop.time())
            try:
                saved = await pending.flush()
            except Exception:  # the next tick, or the next full batch, tries again
                log.exception("flushing pending events failed")
                saved = False
            # A failed save is tried again after a whole interval, however long it took.
            now = loop.time()
            due = next_tick(due, now, within_seconds) if saved else now + within_seconds

    flusher = asyncio.create_task(flush_periodically())
    try:
        yield pending
    finally:
        flusher.cancel()
        if app is not None:
            app.on_partitions_revoked.disconnect(on_revoked)
        # Whatever was fully processed is saved now rather than processed again after a
        # restart; if saving fails, those events simply come again. A shutdown cancels the
        # agent again while it waits on that save's thread: the save still runs to its end,
        # so that what it stored is acknowledged before the consumer's last commit.
        final = asyncio.ensure_future(pending.flush())
        while not final.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(final)
