"""When the batch timer flushes (agents/batches.py): at a fixed rate."""

from __future__ import annotations

from agents.batches import next_tick


def test_a_save_shorter_than_the_interval_does_not_push_the_next_flush_back() -> None:
    assert next_tick(10.0, now=10.3, interval=0.5) == 10.5
    assert next_tick(10.5, now=10.6, interval=0.5) == 11.0


def test_a_save_that_overran_the_interval_is_followed_at_once_without_a_burst() -> None:
    after_overrun = next_tick(10.0, now=11.7, interval=0.5)
    assert after_overrun == 11.7
    # The ticks the long save overran (10.5 to 11.5) are not made up for.
    assert next_tick(after_overrun, now=11.75, interval=0.5) == 12.2
