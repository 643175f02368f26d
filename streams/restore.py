"""Tables restored at consumer speed (a change of faust-streaming 0.15.3's in-memory store).

Faust's recovery reads every changelog record through its per-record stream path (consumer,
conductor, channel, buffer): about 10,800 records/s on our benchmark machine, where a plain
aiokafka consumer reads the same partitions at about 475,000 records/s. Faust asks a store
how far its data already is (`persisted_offset`) and reads the changelog only from there; the
in-memory store always answers "nowhere".

`BulkRestoreStore` loads each newly assigned changelog partition itself, with its own
consumer, from the beginning to the end offset it finds, applying tombstones as deletions,
and answers that offset: Faust's recovery then reads only what was written meanwhile, and
goes on exactly as before (seek, resume, Ready). A partition that stays assigned through a
rebalance keeps its data and offset; one that is revoked forgets its offset, so it is loaded
again in full if it comes back, and the keys of a revoked partition leave memory.

Both paths apply a record only if `ChangelogFence` admits it (streams/fencing.py): a record
written by an older generation than one already seen in its partition came from a worker that
had lost the partition, and is ignored. The store is also the stages' `StateStore`
(agents/processor.py): what they save is registered with its partition, like what is restored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust import Table
from faust.stores.memory import Store as MemoryStore
from faust.types import TP

from streams.fencing import ChangelogFence, is_marker, record_generation

RECORDS_PER_FETCH = 10_000

log = logging.getLogger(__name__)


class BulkRestoreStore(MemoryStore):  # type: ignore[type-arg]
    def __post_init__(self) -> None:
        super().__post_init__()
        self._loaded_through: dict[TP, int] = {}
        self._fence = ChangelogFence()

    # The stages' StateStore.
    def state_of(self, key: bytes) -> bytes | None:
        value: bytes | None = self.data.get(key)
        return value

    def save_state(self, key: bytes, value: bytes, partition: int) -> None:
        self.data[key] = value
        self._key_partition[key] = partition

    def drop_state(self, key: bytes) -> None:
        self.data.pop(key, None)
        self._key_partition.pop(key, None)

    def keys_of(self, partitions: Collection[int]) -> list[tuple[bytes, int]]:
        return [(key, p) for key, p in self._key_partition.items() if p in partitions]

    def state_count(self) -> int:
        return len(self.data)

    def _admits(self, partition: int, key: bytes | None, headers: Any) -> bool:
        admitted = self._fence.admits(partition, record_generation(headers))
        return admitted and not is_marker(key)

    def apply_changelog_batch(
        self,
        batch: Iterable[Any],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        """Faust's recovery of the tail after the bulk load, through the same fence."""
        ignored = self._fence.ignored
        admitted = [
            event
            for event in batch
            if self._admits(event.message.partition, event.message.key, event.message.headers)
        ]
        super().apply_changelog_batch(admitted, to_key, to_value)
        if self._fence.ignored > ignored:
            log.warning(
                "%s: ignored %d changelog records of a fenced generation",
                self.table.name,
                self._fence.ignored - ignored,
            )

    def persisted_offset(self, tp: TP) -> int | None:
        return self._loaded_through.get(tp)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        changelog = self.table.changelog_topic.get_topic_name()
        gone = {tp.partition for tp in revoked if tp.topic == changelog}
        for tp in revoked:
            self._loaded_through.pop(tp, None)
        for partition in gone:
            self._fence.forget(partition)
        if gone:
            keys = [key for key, _ in self.keys_of(gone)]
            for key in keys:
                self.drop_state(key)
            log.info(
                "Forgot %d keys of %s (revoked partitions %s)", len(keys), self.table.name, gone
            )
        partitions = {tp for tp in newly_assigned if tp.topic == changelog}
        if partitions:
            began = time.perf_counter()
            ignored = self._fence.ignored
            records = await self._load(partitions)
            log.info(
                "Loaded %d changelog records of %s (%d partitions) in %.2f s; "
                "%d records of a fenced generation ignored",
                records,
                self.table.name,
                len(partitions),
                time.perf_counter() - began,
                self._fence.ignored - ignored,
            )

    async def _load(self, partitions: set[TP]) -> int:
        """Apply the partitions' records up to their end offsets; how many there were."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=[f"{url.host}:{url.port or 9092}" for url in self.app.conf.broker],
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        try:
            wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
            consumer.assign(wanted)
            starts: dict[TopicPartition, int] = await consumer.beginning_offsets(wanted)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(wanted)
            remaining = {tp for tp in wanted if ends[tp] > starts[tp]}
            applied = 0
            for tp in remaining:
                consumer.seek(tp, starts[tp])
            while remaining:
                batch = await consumer.getmany(
                    *remaining, timeout_ms=1000, max_records=RECORDS_PER_FETCH
                )
                for tp, records in batch.items():
                    wanted_records = [r for r in records if r.offset < ends[tp]]
                    self._apply(tp.partition, wanted_records)
                    applied += len(wanted_records)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            for tp, end in ends.items():
                if end > 0:
                    self._loaded_through[TP(tp.topic, tp.partition)] = end - 1
        finally:
            await consumer.stop()
        return applied

    def _apply(self, partition: int, records: list[Any]) -> None:
        for record in records:
            if not self._admits(partition, record.key, record.headers):
                continue
            if record.value is None:  # a tombstone: the key was deleted
                self.data.pop(record.key, None)
                self._key_partition.pop(record.key, None)
            else:
                self.data[record.key] = record.value
                self._key_partition[record.key] = partition


class BulkRestoreTable(Table):  # type: ignore[type-arg]
    """Faust's table on a `BulkRestoreStore`; set as the app's `Table` class."""

    def _new_store_by_url(self, url: Any) -> BulkRestoreStore:
        return BulkRestoreStore(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )
