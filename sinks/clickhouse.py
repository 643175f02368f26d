"""ClickHouse: the schema, a client for either engine, and a batched idempotent writer.

The default DSN `chdb:///abs/dir` runs the real ClickHouse engine in-process (one
process per data dir); `http(s)://user:password@host:8123/db` talks to a server.
Every table is a ReplacingMergeTree keyed so that re-delivered rows collapse and
the newest version of a credit wins: query with FINAL for exact sums.

Every call to ClickHouse blocks (an HTTP round trip, or the embedded engine's work), so agents
make them through the writer's async methods, which run them on the writer's own thread: an
insert inside an agent would otherwise stall every agent and timer of the worker. Calls are
serialized, one at a time, whichever thread makes them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError

from attribution.rows import ERASURES, Row, RowBlock, row_blocks, wire_row_blocks


def catalog_view(name: str, create: str) -> str:
    """The newest catalog version of `dim_<name>`. ClickHouse expands `*` when a view is
    created: a column added to the table later needs the view created again."""
    return f"""
        {create} catalog_{name} AS
        SELECT * EXCEPT catalog_version FROM dim_{name} FINAL
        WHERE catalog_version = (SELECT max(catalog_version) FROM catalog_versions)
        """


SCHEMA: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS credits (
        order_id String,
        model LowCardinality(String),
        touchpoint_event_id String,
        touchpoint_type LowCardinality(String),
        touchpoint_at Nullable(DateTime64(6, 'UTC')),
        position UInt16,
        touchpoints UInt16,
        influencer_id String,
        campaign_id String,
        platform LowCardinality(String),
        tier LowCardinality(String),
        credit Decimal(38, 18),
        revenue_credit Decimal(38, 4),
        currency LowCardinality(String),
        order_at DateTime64(6, 'UTC'),
        customer_id String,
        version UInt64,
        is_deleted UInt8,
        written_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(version, is_deleted)
    PARTITION BY toYYYYMM(order_at)
    ORDER BY (order_id, model, touchpoint_event_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS orders (
        order_id String,
        customer_id String,
        order_at DateTime64(6, 'UTC'),
        currency LowCardinality(String),
        total Decimal(38, 4),
        refunded Decimal(38, 4),
        net_revenue Decimal(38, 4),
        touchpoints UInt16,
        version UInt64,
        written_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(version)
    PARTITION BY toYYYYMM(order_at)
    ORDER BY order_id
    """,
    """
    CREATE TABLE IF NOT EXISTS refunds (
        event_id String,
        order_id String,
        refunded_at DateTime64(6, 'UTC'),
        amount Decimal(38, 4),
        currency LowCardinality(String),
        reason String
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(refunded_at)
    ORDER BY (order_id, event_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS clicks (
        event_id String,
        occurred_at DateTime64(6, 'UTC'),
        visitor_id String,
        customer_id String,
        influencer_id String,
        campaign_id String,
        platform LowCardinality(String),
        tier LowCardinality(String),
        link_id String,
        url String,
        ip_hash String DEFAULT '',
        user_agent_hash String DEFAULT ''
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(occurred_at)
    ORDER BY (influencer_id, occurred_at, event_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS code_redemptions (
        event_id String,
        occurred_at DateTime64(6, 'UTC'),
        code String,
        order_id String,
        customer_id String,
        influencer_id String,
        campaign_id String,
        known_code UInt8
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(occurred_at)
    ORDER BY (order_id, event_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS identity_links (
        event_id String,
        occurred_at DateTime64(6, 'UTC'),
        visitor_id String,
        customer_id String
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(occurred_at)
    ORDER BY (visitor_id, customer_id, event_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS content_metrics (
        event_id String,
        occurred_at DateTime64(6, 'UTC'),
        influencer_id String,
        post_id String,
        platform LowCardinality(String),
        campaign_id String,
        impressions UInt64,
        reach UInt64,
        likes UInt64,
        comments UInt64,
        shares UInt64,
        saves UInt64,
        followers UInt64
    ) ENGINE = ReplacingMergeTree(occurred_at)
    ORDER BY (influencer_id, post_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS catalog_versions (
        catalog_version UInt64,
        loaded_at DateTime64(3, 'UTC')
    ) ENGINE = ReplacingMergeTree ORDER BY catalog_version
    """,
    """
    CREATE TABLE IF NOT EXISTS dim_influencers (
        catalog_version UInt64,
        influencer_id String,
        handle String,
        platform LowCardinality(String),
        followers UInt64,
        tier LowCardinality(String)
    ) ENGINE = ReplacingMergeTree ORDER BY (catalog_version, influencer_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS dim_campaigns (
        catalog_version UInt64,
        campaign_id String,
        name String,
        category LowCardinality(String),
        starts_at DateTime64(6, 'UTC'),
        ends_at DateTime64(6, 'UTC'),
        budget Decimal(38, 4),
        currency LowCardinality(String)
    ) ENGINE = ReplacingMergeTree ORDER BY (catalog_version, campaign_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS dim_codes (
        catalog_version UInt64,
        code String,
        influencer_id String,
        campaign_id String
    ) ENGINE = ReplacingMergeTree ORDER BY (catalog_version, code)
    """,
    """
    CREATE TABLE IF NOT EXISTS dim_links (
        catalog_version UInt64,
        link_id String,
        influencer_id String,
        campaign_id String
    ) ENGINE = ReplacingMergeTree ORDER BY (catalog_version, link_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS dim_contracts (
        catalog_version UInt64,
        influencer_id String,
        campaign_id String,
        fee_per_post Decimal(38, 4),
        posts UInt32,
        retainer Decimal(38, 4),
        commission_rate Decimal(9, 6),
        bonus_amount Decimal(38, 4),
        bonus_metric LowCardinality(String),
        bonus_threshold Decimal(38, 6),
        commission_model LowCardinality(String) DEFAULT 'last_click'
    ) ENGINE = ReplacingMergeTree ORDER BY (catalog_version, influencer_id, campaign_id)
    """,
    *(
        catalog_view(name, "CREATE VIEW IF NOT EXISTS")
        for name in ("influencers", "campaigns", "codes", "links", "contracts")
    ),
)


# Wire values are text; rows inserted in the worker's own process (`insert_rows_now`) bring
# their times, days and decimals native, and keep them.
def _time(value: str | datetime | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _decimal(value: str | Decimal) -> Decimal:
    return Decimal(value)


def _day(value: str | date | None) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else value


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "touchpoint_at": _time,
    "order_at": _time,
    "refunded_at": _time,
    "occurred_at": _time,
    "credit": _decimal,
    "revenue_credit": _decimal,
    "total": _decimal,
    "refunded": _decimal,
    "net_revenue": _decimal,
    "reporting_revenue_credit": _decimal,
    "reporting_total": _decimal,
    "reporting_refunded": _decimal,
    "reporting_net_revenue": _decimal,
    "fx_rate": _decimal,
    "fx_rate_date": _day,
    "amount": _decimal,
    "unit_price": _decimal,
    "is_deleted": int,
    "known_code": int,
}


def server_arguments(dsn: str) -> dict[str, Any]:
    """`clickhouse_connect.get_client` arguments for an `http(s)://user:password@host:port/db`
    DSN (percent-escapes decoded, so a password may hold any character).
    """
    parts = urlsplit(dsn)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a ClickHouse server DSN (http(s)://user:pw@host:port/db): {dsn!r}")
    secure = parts.scheme == "https"
    return {
        "host": parts.hostname,
        "port": parts.port or (8443 if secure else 8123),
        "secure": secure,
        "username": unquote(parts.username or "default"),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.strip("/")) or "default",
    }


def connect(dsn: str) -> Client:
    """A client for `chdb:///path` (embedded) or `http(s)://...` (server)."""
    if dsn.startswith("chdb://"):
        path = dsn.removeprefix("chdb://")
        if path:
            Path(path).mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=dsn)
    return clickhouse_connect.get_client(**server_arguments(dsn))


def to_columns(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows of wire values (in the order of `names`) as the columns ClickHouse stores.

    Built a column at a time, as clickhouse-connect serialises them. Each distinct wire value of
    a column is converted once: most repeat within a batch (an order's time and amounts on every
    credit row of it)."""
    columns = []
    for name, values in zip(names, zip(*rows, strict=True), strict=True):
        convert = _CONVERTERS.get(name)
        if convert is not None:
            converted = {value: convert(value) for value in set(values)}
            columns.append(list(map(converted.__getitem__, values)))
        else:
            columns.append(list(values))
    return columns


Result = TypeVar("Result")


class ClickHouseWriter:
    """Writes batches of wire rows, one column-oriented insert per table.

    The plain methods block; `insert`, `read` and `call` run them off the event loop."""

    def __init__(self, client: Client) -> None:
        self._client = client
        # One call at a time: the embedded engine's session is shared by every thread.
        self._lock = threading.RLock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        # Each table's column types by column name, so that an insert does not ask the engine
        # for them (`DESCRIBE TABLE`) every time, as clickhouse-connect does when not told.
        self._column_types: dict[str, dict[str, str]] = {}

    async def call(self, function: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
        """`function(*args, **kwargs)` on the writer's thread, awaited on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: function(*args, **kwargs))

    async def with_client(self, function: Callable[[Client], Result]) -> Result:
        """`function(client)` on the writer's thread, alone on the engine's session."""

        def locked() -> Result:
            with self._lock:
                return function(self._client)

        return await self.call(locked)

    async def insert(self, rows: Sequence[dict[str, Any]]) -> int:
        return await self.call(self.insert_now, rows)

    async def insert_blocks(self, blocks: Sequence[RowBlock]) -> int:
        return await self.call(self.insert_blocks_now, blocks)

    async def read(
        self, sql: str, *, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[list[Any]]]:
        return await self.call(self.query, sql, parameters=parameters)

    def insert_now(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert wire rows (dicts, as `to_wire` gives them), one insert per table."""
        return self.insert_blocks_now(wire_row_blocks(rows))

    def insert_rows_now(self, rows: Iterable[Row]) -> int:
        """Insert the core's rows as they are, one insert per table."""
        return self.insert_blocks_now(row_blocks(rows))

    def insert_blocks_now(self, blocks: Iterable[RowBlock]) -> int:
        """Insert blocks of wire rows, one insert per table and columns. An erasure applies
        after the rows before it are stored and before those after it; all of it can be
        repeated without harm."""
        by_table: dict[tuple[str, tuple[str, ...]], list[Sequence[Any]]] = {}
        stored = 0
        with self._lock:
            for block in blocks:
                if block.table == ERASURES:
                    stored += self._insert_tables(by_table)
                    by_table.clear()
                    for values in block.rows:
                        erasure = dict(zip(block.columns, values, strict=True))
                        self.erase_customer(
                            erasure["customer_id"], erasure["pseudonym"], erasure["visitor_ids"]
                        )
                else:
                    by_table.setdefault((block.table, block.columns), []).extend(block.rows)
            return stored + self._insert_tables(by_table)

    def insert_columns(
        self, table: str, data: Sequence[Sequence[Any]], names: Sequence[str]
    ) -> None:
        """Insert rows of native values (no wire conversion) into `table`, if there are any."""
        if data:
            with self._lock:
                self._insert(table, data, names, column_oriented=False)

    def _insert_tables(
        self, by_table: dict[tuple[str, tuple[str, ...]], list[Sequence[Any]]]
    ) -> int:
        for (table, names), rows in by_table.items():
            self._insert(table, to_columns(names, rows), names, column_oriented=True)
        return sum(len(rows) for rows in by_table.values())

    def _insert(
        self,
        table: str,
        data: Sequence[Sequence[Any]],
        names: Sequence[str],
        *,
        column_oriented: bool,
    ) -> None:
        """One insert, with the column types cached for `table`.

        Migrations only add columns, and rows name a new column only once the code that writes
        it runs, after its migration: a column the cache does not know makes it read the table
        again. A type changed under a running writer (another process altering or re-creating
        the table) is sent as cached and converted by the engine where it can be; where the
        insert fails instead, the table is read again and the insert retried once if the types
        of its columns changed, which a repeated insert cannot harm (every table replaces rows
        by their key). No migration changes a column's type: one that did, say a wider decimal
        scale, would need the writers restarted, as the cached type would cut the new digits."""
        insert = partial(
            self._client.insert, table, data, column_names=names, column_oriented=column_oriented
        )
        types = self._types(table, names, refresh=False)
        try:
            insert(column_type_names=types)
        except Exception:
            fresh = self._types(table, names, refresh=True)
            if fresh == types:
                raise
            insert(column_type_names=fresh)

    def _types(self, table: str, names: Sequence[str], *, refresh: bool) -> list[str]:
        known = self._column_types.get(table)
        if refresh or known is None or not known.keys() >= set(names):
            described = self._client.query(f"DESCRIBE TABLE {table}")
            known = {str(row[0]): str(row[1]) for row in described.result_rows}
            self._column_types[table] = known
        missing = [name for name in names if name not in known]
        if missing:
            raise ProgrammingError(f"no column {', '.join(missing)} in table {table}")
        return [known[name] for name in names]

    def erase_customer(self, customer_id: str, pseudonym: str, visitor_ids: Sequence[str]) -> None:
        """The customer's rows name the pseudonym instead; their visitors' ids, device hashes
        and identity links are gone. Money and credits are unchanged. The credits and orders of
        settings versions a restate kept (`settings_versions`) are rewritten too."""
        parameters = {"customer": customer_id, "pseudonym": pseudonym, "visitors": visitor_ids}
        with self._lock:
            kept = self._client.query(
                "SELECT credits_table, orders_table FROM settings_versions FINAL "
                "WHERE state = 'kept'"
            ).result_rows
        statements = [
            f"ALTER TABLE {table} UPDATE customer_id = {{pseudonym:String}} "
            "WHERE customer_id = {customer:String}"
            for table in (
                "credits",
                "orders",
                "code_redemptions",
                *(name for tables in kept for name in tables),
            )
        ]
        statements += [
            """
            ALTER TABLE clicks UPDATE
                customer_id = if(customer_id = {customer:String}, {pseudonym:String}, customer_id),
                visitor_id = '', ip_hash = '', user_agent_hash = ''
            WHERE customer_id = {customer:String} OR has({visitors:Array(String)}, visitor_id)
            """,
            # A journey's identity is its customer, else 'visitor:<id>' (sinks/datadriven.py).
            """
            ALTER TABLE journey_paths UPDATE identity = {pseudonym:String}
            WHERE identity = {customer:String}
                OR has(arrayMap(v -> concat('visitor:', v), {visitors:Array(String)}), identity)
            """,
            """
            ALTER TABLE identity_links DELETE
            WHERE customer_id = {customer:String} OR has({visitors:Array(String)}, visitor_id)
            """,
        ]
        with self._lock:
            for statement in statements:
                self.command(statement, parameters)
            self._insert(
                "erasures",
                [[pseudonym, len(visitor_ids)]],
                ["pseudonym", "visitors"],
                column_oriented=False,
            )

    def command(self, sql: str, parameters: dict[str, Any]) -> None:
        """A statement that changes a table; a mutation (`ALTER TABLE ... UPDATE/DELETE`)
        returns once every part is rewritten."""
        with self._lock:
            self._client.command(sql, parameters=parameters, settings={"mutations_sync": 2})

    def query(
        self, sql: str, *, readonly: bool = True, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[list[Any]]]:
        settings = {"readonly": 1} if readonly else None
        with self._lock:
            result = self._client.query(sql, parameters=parameters, settings=settings)
        return list(result.column_names), [list(row) for row in result.result_rows]
