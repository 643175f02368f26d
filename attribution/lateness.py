"""Which events arrive later than the allowed lateness (contract 5, late events).

Final credits are independent of arrival order for every event that arrives no more than
the allowed lateness after events newer than itself; an event later than that is still
applied, but its credit may depend on what was already forgotten, so it is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(slots=True)
class LatenessTracker:
    """The newest event time seen so far, and whether an event is late against it.

    >>> from datetime import UTC
    >>> tracker = LatenessTracker(timedelta(days=14))
    >>> tracker.observe(datetime(2026, 3, 30, tzinfo=UTC))
    False
    >>> tracker.observe(datetime(2026, 3, 1, tzinfo=UTC))
    True
    """

    allowed: timedelta
    newest: datetime | None = None

    def observe(self, occurred_at: datetime, now: datetime | None = None) -> bool:
        """Whether an event of `occurred_at` is late; `now` caps the newest time a worker
        trusts, so that one event stamped in the future does not make the rest look late."""
        late = self.newest is not None and occurred_at < self.newest - self.allowed
        trusted = occurred_at if now is None else min(occurred_at, now)
        if self.newest is None or trusted > self.newest:
            self.newest = trusted
        return late
