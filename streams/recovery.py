"""Table recovery and fetching that cannot skip stream records (fixes of faust-streaming 0.15.3).

When a worker starts with tables to restore, Faust's `Recovery.on_recovery_completed`
resumes the stream partitions and only then awaits the seek to their committed offsets
(one broker round trip per partition). Meanwhile the consumer fetches stream records and
hands them to the agents' channel queues, the seek rewinds the consumer's read offsets
under it, and resuming flow control then clears those queues (they are created with
`clear_on_resume`). The records in the cleared queues never reach an agent, and because
the read offset moved back, Faust takes the jump that follows for a compacted-topic gap
and acknowledges it. Measured: 50 to 150 events per partition lost in about one restart
in three under a backlog (docs/reliability.md).

Here the seek happens while the stream partitions are still paused, and they are resumed
in the same step as flow control, so nothing is fetched that a queue clear could drop.
Everything else is what Faust's method does, in Faust's order.

A second loss has the same root: while tables are restored, a fetch can return records of
stream partitions, which Faust drops because those partitions are paused. The seek rewinds
a partition only to its committed offset, and aiokafka does not move a partition that was
never committed, so its records fetched during recovery were skipped for good (seen as
orders missing after a SIGKILL restart, 2026-11-24). Those partitions go back to their
beginning, which is what the `earliest` offset reset means for them.

A third loss came from Faust committing past records no agent acknowledged (seen as a whole
`traffic-commands` record of 12 clicks, and 19 `journey-commands` records, never applied after
scaling from three stage workers to one, 2026-11-30):

- a recovery that was still seeking when the next rebalance began resumed the old assignment's
  partitions and flow after they had been revoked, so records reached the stages while no
  processor owned them, and were passed over unacknowledged;
- Faust took the jump from the last record it read to the next one for a hole left by log
  compaction and acknowledged the offsets in between, although they had been read;
- and its check that the oldest acknowledged record follows the committed offset is off by
  one, so the one record at the committed offset could be committed over unacknowledged.

Here a recovery resumes nothing once a rebalance began after it, and the consumer commits
exactly the unbroken run of acknowledged offsets from the committed one: the topics read as
streams are never compacted and written without transactions, so a record that was not
acknowledged is one that was not processed, and it holds back the commit until it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP


class SeekThenResumeRecovery(Recovery):
    # Faust counts a rebalance when the partitions are revoked, before the new generation id
    # is known: the count at the assignment tells whether this recovery's partitions still are.
    _rebalances_at_assignment = 0

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        app: Any = self.app
        self._rebalances_at_assignment = app.rebalancing_count
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        app: Any = self.app
        consumer = app.consumer
        rebalances = self._rebalances_at_assignment
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        table_callbacks = [
            asyncio.ensure_future(
                table.on_recovery_completed(
                    self.actives_for_table[table], self.standbys_for_table[table]
                )
            )
            for table in self.tables.values()
        ]
        if table_callbacks:
            await asyncio.wait(table_callbacks)
        if self._rebalanced_since(generation_id, rebalances):
            return
        assignment = consumer.assignment()
        stream_partitions = {tp for tp in assignment if not self._is_changelog_tp(tp)}
        if assignment:
            self.log.info("Seek stream partitions to committed offsets (still paused).")
            await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
            # aiokafka seeks only partitions with a committed offset; one never committed keeps
            # the position of records fetched (and dropped by Faust) while tables were restored.
            never_committed = {tp for tp in stream_partitions if consumer._read_offset[tp] is None}
            if never_committed:
                self.log.info(
                    "Seek %d never committed partitions to their beginning.", len(never_committed)
                )
                await self._wait(
                    consumer._thread.seek_to_beginning(
                        *(TopicPartition(tp.topic, tp.partition) for tp in never_committed)
                    ),
                    timeout=app.conf.broker_request_timeout,
                )
        # The seeks awaited the broker: the partitions may have been revoked meanwhile, and
        # resuming them now would feed records to stages that no longer own them.
        if self._rebalanced_since(generation_id, rebalances):
            return
        self.completed.set()
        consumer.resume_partitions(stream_partitions)
        app.flow_control.resume()
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")

    def _rebalanced_since(self, generation_id: int, rebalances: int) -> bool:
        app: Any = self.app
        if app.consumer_generation_id == generation_id and app.rebalancing_count == rebalances:
            return False
        self.log.warning("Recovery rebalancing again")
        return True


class SeekThenResumeTableManager(TableManager):
    """Faust's table manager with `SeekThenResumeRecovery`; set as the app's `TableManager`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekThenResumeRecovery(
                self.app, self, beacon=self.beacon, loop=self.loop
            )
        return self._recovery


class SnapshotFetchConsumer(aiokafka_driver.Consumer):
    """Faust's consumer, asking aiokafka for records of a fixed set of partitions.

    Faust hands aiokafka its live set of active partitions, which aiokafka reads in the
    consumer's thread for as long as it waits for records (up to a second). Recovery empties
    that set when it pauses the changelogs, and aiokafka takes an empty set for "every
    partition": it then returned records of paused stream partitions, which Faust dropped
    while their read position moved past them.
    """

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:  # noqa: ASYNC109 (Faust's signature)
        snapshot = None if active_partitions is None else set(active_partitions)
        return await super()._getmany(snapshot, timeout)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Faust's hook for holes left by log compaction; the topics read as streams have none,
        and a jump in what was read is not one (see the module doc)."""

    async def perform_seek(self) -> None:
        await super().perform_seek()
        await self._start_runs_at_first_records()

    async def _start_runs_at_first_records(self) -> None:
        """Where each stream partition's unbroken run of acknowledgements starts: its committed
        offset, or its first record when it was never committed or retention deleted records
        before they were read (those are gone: said once here, rather than holding back every
        commit of the partition for good)."""
        partitions = {tp for tp in self.assignment() if self.app.topics.acks_enabled_for(tp.topic)}
        if not partitions:
            return
        first_records: Mapping[TP, int] = await self.earliest_offsets(*partitions)
        for tp, first in first_records.items():
            committed = self._committed_offset[tp]
            if committed is not None and committed < first:
                self.log.warning(
                    "%s[%d]: %d records were deleted by retention before they were read",
                    tp.topic,
                    tp.partition,
                    first - committed,
                )
            if committed is None or committed < first:
                self._committed_offset[tp] = first

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        acked.sort()
        settled, offset = committable_run(acked, self._committed_offset[tp])
        if settled:
            self._acked_index[tp].difference_update(acked[:settled])
            del acked[:settled]
        return offset


def committable_run(acked: Sequence[int], committed: int | None) -> tuple[int, int | None]:
    """How many of the sorted acknowledged offsets `acked` are settled, and the offset to commit
    after them (None: nothing new). Offsets below the committed one are settled already; from it
    on, only an unbroken run counts. Without a known start (Faust forgets it when partitions are
    revoked, before the revocation's last flush acknowledges), nothing is committed: the next
    owner reads those records again.

    >>> committable_run([7, 8, 9, 11], committed=7)
    (3, 10)
    >>> committable_run([8, 9], committed=7)  # 7 not acknowledged: nothing to commit
    (0, None)
    >>> committable_run([3, 5, 6], committed=5)
    (3, 7)
    >>> committable_run([4, 5], committed=None)
    (0, None)
    """
    if committed is None:
        return 0, None
    settled = 0
    while settled < len(acked) and acked[settled] < committed:
        settled += 1
    if settled == len(acked):
        return settled, None
    next_offset = committed
    start = settled
    while settled < len(acked) and acked[settled] == next_offset:
        settled += 1
        next_offset += 1
    return settled, (next_offset if settled > start else None)


class SnapshotFetchTransport(aiokafka_driver.Transport):
    Consumer = SnapshotFetchConsumer
