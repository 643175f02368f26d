"""The tunable rules of attribution (contract section 5 defaults)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum

from attribution.values import immutable


class CodePolicy(StrEnum):
    """What an order's promo code does when the journey also has influencer clicks."""

    CODE_AS_LAST_TOUCH = "code_as_last_touch"
    """The code is one more touchpoint, after the clicks (Rockerbox's synthetic last touch)."""
    CODE_WINS = "code_wins"
    """The code's owner takes all the credit under every model (UpPromote, Modash)."""
    LINK_WINS = "link_wins"
    """The code is credited only when the journey has no influencer click (Refersion)."""


class ClickPolicy(StrEnum):
    """What classified clicks earn (impact.com's click filters)."""

    RELAXED = "relaxed"
    """Every click is credited; invalid and suspicious ones are only flagged."""
    MODERATE = "moderate"
    """Invalid clicks earn nothing; suspicious ones are credited and flagged for review."""
    STRICT = "strict"
    """Invalid and suspicious clicks earn nothing."""


@immutable
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
    code_policy: CodePolicy = CodePolicy.CODE_AS_LAST_TOUCH
    """The program's policy; a campaign's `code_policy` column overrides it for its codes."""
    click_policy: ClickPolicy = ClickPolicy.MODERATE
    duplicate_click_window: timedelta = timedelta(hours=1)
    """A click of the same IP, user agent and influencer this soon after another counts once."""
    click_burst_limit: int = 10
    """More clicks than this from one IP on one influencer within `click_burst_window` are a
    burst."""
    click_burst_window: timedelta = timedelta(minutes=10)
    min_click_to_order: timedelta = timedelta(seconds=15)
    """A click less than this before an order is too fast to be human: it earns nothing for it."""

    @property
    def traffic_reach(self) -> timedelta:
        """How far apart two clicks of an address can be and still classify one another."""
        return max(self.duplicate_click_window, self.click_burst_window)

    @property
    def traffic_retention(self) -> timedelta:
        """How far behind an address's newest click an older one may still matter: a late click
        reclassifies clicks up to one reach away, whose classification looks one more back."""
        return 2 * self.traffic_reach + self.allowed_lateness

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
    """Whether two instants fall on the same UTC day (how often state is pruned).

    >>> from datetime import timezone
    >>> late = datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)
    >>> same_day(late, late + timedelta(microseconds=1))
    False
    >>> same_day(late, datetime(2026, 3, 2, 1, 0, tzinfo=timezone(timedelta(hours=2))))
    True
    """
    if earlier.tzinfo is UTC and later.tzinfo is UTC:
        # What the stages hold (events are read into UTC); it runs on every event, and
        # converting each instant first costs four times as much.
        return earlier.date() == later.date()
    return earlier.astimezone(UTC).date() == later.astimezone(UTC).date()
