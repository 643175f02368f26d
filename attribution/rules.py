"""The tunable rules of attribution (SPEC section 5 defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class Rules:
    lookback: timedelta = timedelta(days=30)
    half_life: timedelta = timedelta(days=7)
    restatement_window: timedelta = timedelta(days=7)
    refund_window: timedelta = timedelta(days=180)
    max_touchpoints: int = 50

    @property
    def touchpoint_retention(self) -> timedelta:
        """How far behind a customer's newest event a click may still matter."""
        return self.lookback + self.restatement_window
