"""The tunable rules of attribution (contract section 5 defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Rules:
    lookback: timedelta = timedelta(days=30)
    half_life: timedelta = timedelta(days=7)
    restatement_window: timedelta = timedelta(days=7)
    refund_window: timedelta = timedelta(days=180)
    max_touchpoints: int = 50
    identity_retention: timedelta = timedelta(days=180)
    """How long a visitor's link to a customer is remembered after the visitor's last event."""
    allowed_lateness: timedelta = timedelta(days=14)
    """How long after newer events an event may arrive and still be credited exactly as if it
    had arrived in time: every retention below keeps state this much longer."""

    @property
    def touchpoint_retention(self) -> timedelta:
        """How far behind a customer's newest event a click may still matter."""
        return self.lookback + self.restatement_window + self.allowed_lateness

    @property
    def order_retention(self) -> timedelta:
        """How far behind a customer's newest event an order may still be restated."""
        return self.refund_window + self.allowed_lateness

    @property
    def journey_retention(self) -> timedelta:
        """How far behind the newest event a customer's journey may still change."""
        return max(self.touchpoint_retention, self.order_retention)


def same_day(earlier: datetime, later: datetime) -> bool:
    """Whether two instants fall on the same UTC day (how often state is pruned)."""
    return earlier.timestamp() // 86400 == later.timestamp() // 86400
