"""Fencing a worker that lost its partitions without knowing it yet (a zombie).

A worker frozen for longer than the session timeout (a SIGSTOP, a long GC or VM pause) is
dropped from the consumer group and its partitions go to another worker, which restores their
tables and carries on. When the frozen worker wakes up it still believes it owns them until
its next heartbeat is refused; whatever it writes meanwhile would land on top of the new
owner's work. Two guards, one on each side of the changelog:

- `GroupLease` (writer side): a stage writes for an assignment only while the group coordinator
  has confirmed, less than `lease_seconds` ago, that this worker is a member of that
  assignment's generation. The confirmation is a heartbeat or group sync the coordinator
  accepted, timed from when it was *sent*, so a pause after it only makes the lease look older. The
  coordinator drops a member only after a full session timeout without a heartbeat, so a lease
  shorter than the session timeout expires before another worker can be given the partitions.
- `ChangelogFence` (reader side): every changelog record a stage writes carries the group
  generation of the assignment that wrote it (record header `generation`), and the first write
  of each generation to a partition is preceded by a marker record of its own key that
  compaction never removes. Restoring a partition, a record of an older generation than one
  already seen in that partition is ignored: a write that was already on its way when the
  writer froze (checked, then sent after the pause) cannot overwrite the new owner's state on
  any later restore.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.protocol.group import HeartbeatRequest, SyncGroupRequest

log = logging.getLogger(__name__)

GENERATION_HEADER = "generation"
# A key no stage writes (stage keys are ids); one marker per generation and partition, so
# compaction keeps every marker and with it the order of generations.
MARKER_PREFIX = b"\x00generation\x00"
UNKNOWN_MEMBER_ID = ""


def generation_headers(generation: int) -> list[tuple[str, bytes]]:
    return [(GENERATION_HEADER, str(generation).encode())]


def marker_key(generation: int) -> bytes:
    return MARKER_PREFIX + str(generation).encode()


def is_marker(key: bytes | None) -> bool:
    return key is not None and key.startswith(MARKER_PREFIX)


def record_generation(headers: Any) -> int | None:
    """The generation a record was written by, None for records written without one (older
    workers, tools): those are always applied."""
    if not headers:
        return None
    pairs: Iterable[tuple[Any, Any]] = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if name == GENERATION_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


class ChangelogFence:
    """Which changelog records a restore applies: per partition, the newest generation seen.

    >>> fence = ChangelogFence()
    >>> [fence.admits(0, generation) for generation in (3, 3, 5, 3, None, 5, 6)]
    [True, True, True, False, True, True, True]
    >>> fence.ignored
    1
    """

    def __init__(self) -> None:
        self._newest: dict[int, int] = {}
        self.ignored = 0

    def admits(self, partition: int, generation: int | None) -> bool:
        if generation is None:
            return True
        newest = self._newest.get(partition)
        if newest is not None and generation < newest:
            self.ignored += 1
            return False
        self._newest[partition] = generation
        return True

    def forget(self, partition: int) -> None:
        self._newest.pop(partition, None)


class GroupLease:
    """Whether the group coordinator still counts this worker in a generation (see module doc).

    Reads aiokafka's group coordinator, which runs in Faust's consumer thread: `watch` wraps
    the coordinator's requests once the consumer exists."""

    def __init__(self, app: Any, lease_seconds: float) -> None:
        self._app = app
        self.lease_seconds = lease_seconds
        self._coordinator: Any = None
        self._confirmed_at = float("-inf")
        self.assigned_generation: int | None = None  # of the current assignment

    @classmethod
    def of(cls, app: Any) -> GroupLease:
        """The app's lease (one per consumer), shorter than its session timeout: the
        coordinator drops a silent member only after a whole session timeout."""
        lease: GroupLease | None = getattr(app, "_attribution_lease", None)
        if lease is None:
            lease = cls(app, lease_seconds=app.conf.broker_session_timeout / 2)
            app._attribution_lease = lease
        return lease

    @classmethod
    def existing(cls, app: Any) -> GroupLease | None:
        lease: GroupLease | None = getattr(app, "_attribution_lease", None)
        return lease

    def current(self) -> bool:
        """Whether the current assignment may still be written for."""
        generation = self.assigned_generation
        return generation is not None and self.holds(generation)

    def watch(self) -> None:
        """Start counting the coordinator's answers; called on every revocation and assignment
        (the first revocation comes before the first join), idempotent."""
        coordinator = self._app.consumer._thread._ensure_consumer()._coordinator
        if coordinator is None or coordinator is self._coordinator:
            return
        send = coordinator._send_req
        lease = self

        async def confirming_send(request: Any) -> Any:
            sent = time.monotonic()
            response = await send(request)
            # An accepted heartbeat or group sync: a member of the current generation when the
            # coordinator read it (a rebalance in progress does not count).
            if (
                isinstance(request, HeartbeatRequest | SyncGroupRequest)
                and getattr(response, "error_code", None) == 0
            ):
                lease._confirmed_at = max(lease._confirmed_at, sent)
            return response

        coordinator._send_req = confirming_send
        self._coordinator = coordinator

    @property
    def generation(self) -> int | None:
        coordinator = self._coordinator
        return None if coordinator is None else int(coordinator.generation)

    def confirmed_ago(self) -> float:
        return time.monotonic() - self._confirmed_at

    def holds(self, generation: int) -> bool:
        coordinator = self._coordinator
        return (
            coordinator is not None
            and coordinator.generation == generation
            and coordinator.member_id != UNKNOWN_MEMBER_ID
            and self.confirmed_ago() < self.lease_seconds
        )
