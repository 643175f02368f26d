"""The offset a worker commits: only an unbroken run of acknowledged records from the committed
offset, so a record no stage acknowledged is read again rather than skipped (streams/recovery.py).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.recovery import committable_run


def test_a_record_passed_over_at_the_committed_offset_holds_back_everything_after_it() -> None:
    # Faust's own rule let 225..251 commit over an unacknowledged 224 once 225..242 were taken
    # for a compacted hole (the 1 -> 3 -> 1 workers test, 2026-11-30).
    assert committable_run(list(range(225, 252)), committed=224) == (0, None)


def test_the_run_from_the_committed_offset_commits_up_to_the_first_unacknowledged_record() -> None:
    assert committable_run([224, 225, 226, 240, 241], committed=224) == (3, 227)


def test_offsets_below_the_committed_one_are_settled_without_a_commit() -> None:
    assert committable_run([100, 101], committed=224) == (2, None)


@given(
    committed=st.integers(0, 50),
    acked=st.sets(st.integers(0, 80), max_size=60),
)
def test_the_committed_offset_never_passes_a_record_that_was_not_acknowledged(
    committed: int, acked: set[int]
) -> None:
    ordered = sorted(acked)
    settled, offset = committable_run(ordered, committed)
    if offset is not None:
        assert all(o in acked for o in range(committed, offset))
        assert offset not in acked  # the run stops at the first one missing
    assert all(o < (offset if offset is not None else committed) for o in ordered[:settled])
