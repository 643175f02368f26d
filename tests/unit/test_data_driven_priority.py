"""The data-driven pass gives way to live traffic (agents/datadriven.py)."""

from __future__ import annotations

from agents.datadriven import LIVE_SAVE_SECONDS, LiveLatency

BUDGET = 1.0


def test_credits_that_waited_longer_than_the_budget_make_the_pass_give_way() -> None:
    live = LiveLatency()
    live.saved(stored_at=100.0, oldest_origin=98.5)
    assert live.behind(now=100.2, budget=BUDGET)


def test_credits_stored_within_the_budget_leave_the_pass_running() -> None:
    live = LiveLatency()
    live.saved(stored_at=100.0, oldest_origin=99.2)
    assert not live.behind(now=100.2, budget=BUDGET)


def test_a_save_that_caught_up_clears_an_earlier_late_one() -> None:
    live = LiveLatency()
    live.saved(stored_at=100.0, oldest_origin=97.0)
    live.saved(stored_at=100.5, oldest_origin=100.0)
    assert not live.behind(now=100.6, budget=BUDGET)


def test_without_recent_saves_there_is_no_live_traffic_to_wait_for() -> None:
    live = LiveLatency()
    assert not live.behind(now=100.0, budget=BUDGET)
    live.saved(stored_at=100.0, oldest_origin=95.0)
    assert not live.behind(now=100.0 + LIVE_SAVE_SECONDS + 0.1, budget=BUDGET)
