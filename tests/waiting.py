"""The one way tests wait for a service: poll a probe until it answers, or fail saying what."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

Answer = TypeVar("Answer")


def wait_until(
    probe: Callable[[], Answer], *, timeout: float, what: str, interval: float = 0.2
) -> Answer:
    """Call `probe` until it returns something truthy and return that; after `timeout`
    seconds fail with `what` and the last answer, so a red test says what never happened.

    >>> answers = iter([0, 0, 7])
    >>> wait_until(lambda: next(answers), timeout=5, what="a non-zero answer", interval=0)
    7
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = probe()
        if answer:
            return answer
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; last answer: {answer!r}")
        time.sleep(interval)
