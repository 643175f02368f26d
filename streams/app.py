"""The Faust app: topics, tables and the shared handles the agents use.

Topics (names prefixed with `topic_prefix`):
  events            raw storefront events (JSON), the input
  traffic-commands  by ip hash     -> traffic table (click classification)
  visitor-commands  by visitor_id  -> visitors table
  order-commands    by order_id    -> ledgers table
  journey-commands  by customer_id -> journeys table
                    (each record an array of {"key", "command"} whose keys all hash to the
                    record's partition, or one command keyed by the record key)
  rows              result rows for ClickHouse, JSON arrays of up to 500 (credits carry a version)
  dead-letters      invalid events with the reason
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from sinks.catalog_store import RedisCatalogCache
from sinks.clickhouse import ClickHouseWriter, connect
from sinks.migrations import migrate
from streams.logs import json_logging_config
from streams.metrics import Metrics
from streams.recovery import SeekThenResumeTableManager, SnapshotFetchTransport
from streams.restore import BulkRestoreTable
from streams.settings import Settings
from streams.topics import faust_app_id


@dataclass
class ClickHouseHandle:
    """Opens the ClickHouse client on first use inside the worker, never at import."""

    dsn: str
    _writer: ClickHouseWriter | None = field(default=None, init=False)

    def writer(self) -> ClickHouseWriter:
        if self._writer is None:
            client = connect(self.dsn)
            migrate(client)
            self._writer = ClickHouseWriter(client)
        return self._writer


@dataclass
class Topology:
    settings: Settings
    app: faust.App
    events: Any
    traffic_commands: Any
    visitor_commands: Any
    order_commands: Any
    journey_commands: Any
    rows: Any
    dead_letters: Any
    traffic: Any
    visitors: Any
    ledgers: Any
    journeys: Any
    catalog: RedisCatalogCache
    clickhouse: ClickHouseHandle
    metrics: Metrics

    @property
    def runs_stages(self) -> bool:
        return self.settings.role in ("all", "stages")

    @property
    def owns_clickhouse(self) -> bool:
        return self.settings.role in ("all", "sink")


class AttributionApp(faust.App):
    """Faust's app with the consumer that fetches a fixed set of partitions."""

    def _new_transport(self) -> Any:
        return SnapshotFetchTransport(self.conf.broker_consumer, self)


def create_topology(settings: Settings) -> Topology:
    app = AttributionApp(
        faust_app_id(settings),
        broker=settings.kafka_url,
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        autodiscover=False,
        topic_partitions=settings.partitions,
        # streams/topics.py creates every topic first (with factor 1 on a single broker); this is
        # what Faust would give a topic of its own.
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=20.0,
        broker_commit_interval=1.0,
        table_standby_replicas=0,
        stream_wait_empty=False,
        # acks=all, not a setting: with fewer acks a leader that dies before its followers
        # copied a record loses it after it was acknowledged and its event committed.
        producer_acks=-1,
        producer_linger_ms=5,
        TableManager=SeekThenResumeTableManager,
        Table=BulkRestoreTable,
        logging_config=(
            json_logging_config(settings.log_level) if settings.log_format == "json" else None
        ),
    )

    def topic(name: str) -> Any:
        # internal=True: the worker creates its topics with the configured partition count.
        return app.topic(settings.topic(name), partitions=settings.partitions, internal=True)

    def table(name: str) -> Any:
        if settings.role == "sink":
            return None
        # bytes in and out: the stages encode state themselves, and the changelog must be
        # read back with the same raw codec it was written with.
        return app.Table(
            name, default=None, partitions=settings.partitions, key_type=bytes, value_type=bytes
        )

    return Topology(
        settings=settings,
        app=app,
        events=topic("events"),
        traffic_commands=topic("traffic-commands"),
        visitor_commands=topic("visitor-commands"),
        order_commands=topic("order-commands"),
        journey_commands=topic("journey-commands"),
        rows=topic("rows"),
        dead_letters=topic("dead-letters"),
        traffic=table("traffic"),
        visitors=table("visitors"),
        ledgers=table("ledgers"),
        journeys=table("journeys"),
        catalog=RedisCatalogCache(
            settings.redis_url, settings.topic_prefix, settings.reporting_currency
        ),
        clickhouse=ClickHouseHandle(settings.clickhouse),
        metrics=Metrics(CollectorRegistry()),
    )
