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
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP


class SeekThenResumeRecovery(Recovery):
    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        app: Any = self.app
        consumer = app.consumer
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
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
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


class SnapshotFetchTransport(aiokafka_driver.Transport):
    Consumer = SnapshotFetchConsumer
