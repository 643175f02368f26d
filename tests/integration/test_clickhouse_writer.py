"""The writer's inserts on the embedded ClickHouse engine: the column types it keeps per table
stay right when the schema changes under it, and wire values are stored exactly."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from attribution.rows import CreditRow
from sinks import migrations
from sinks.clickhouse import ClickHouseWriter, connect
from sinks.migrations import migrate

pytestmark = pytest.mark.integration


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    client = connect(f"chdb://{tmp_path / 'clickhouse'}")
    yield client
    client.close()


@pytest.fixture
def described(client: Client, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tables the client is asked to describe, in order, from now on."""
    tables: list[str] = []
    query = client.query

    def counting(sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.startswith("DESCRIBE TABLE "):
            tables.append(sql.removeprefix("DESCRIBE TABLE "))
        return query(sql, *args, **kwargs)

    monkeypatch.setattr(client, "query", counting)
    return tables


def credit(version: int, **columns: Any) -> dict[str, Any]:
    """A credit row naming the columns the first migration created, and `columns`."""
    return {
        "table": "credits",
        "order_id": "o-1",
        "model": "linear",
        "touchpoint_event_id": "k-1",
        "touchpoint_type": "click",
        "touchpoint_at": "2026-06-01T10:00:00+00:00",
        "position": 1,
        "touchpoints": 1,
        "influencer_id": "anna",
        "campaign_id": "spring",
        "platform": "instagram",
        "tier": "micro",
        "credit": "1.000000000000000000",
        "revenue_credit": "120.50",
        "currency": "EUR",
        "order_at": "2026-06-01T12:00:00+00:00",
        "customer_id": "c-1",
        "version": version,
        "is_deleted": False,
        **columns,
    }


def stored(client: Client, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in client.query(sql).result_rows]


def test_each_table_is_described_once_not_at_every_insert(
    client: Client, described: list[str]
) -> None:
    migrate(client)
    writer = ClickHouseWriter(client)
    for version in (1, 2, 3):
        writer.insert_now([credit(version)])
        writer.insert_columns(
            "catalog_versions", [[version, datetime.now(UTC)]], ["catalog_version", "loaded_at"]
        )

    assert described == ["credits", "catalog_versions"]
    assert stored(client, "SELECT version FROM credits FINAL") == [(3,)]


def test_a_column_a_migration_adds_after_the_types_were_cached_is_written(
    client: Client, described: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 14 adds `weights_version` to credits; a writer that cached credits before it
    (as a worker of the previous release sharing the server would have) writes the rows of the
    code that needs it."""
    every_migration = migrations.MIGRATIONS
    monkeypatch.setattr(
        migrations,
        "MIGRATIONS",
        tuple(migration for migration in every_migration if migration.version < 14),
    )
    migrate(client)
    writer = ClickHouseWriter(client)
    writer.insert_now([credit(1)])
    monkeypatch.setattr(migrations, "MIGRATIONS", every_migration)
    assert 14 in migrate(client)

    writer.insert_now([credit(2, weights_version=7)])

    assert stored(client, "SELECT version, weights_version FROM credits FINAL") == [(2, 7)]
    assert described == ["credits", "credits"]


def test_an_insert_failing_on_a_type_changed_under_the_writer_is_retried_with_the_new_type(
    client: Client, described: list[str]
) -> None:
    migrate(client)
    writer = ClickHouseWriter(client)
    writer.insert_now([credit(1)])
    # Another process widens the column; 70,000 does not fit the UInt16 the writer knew.
    client.command("ALTER TABLE credits MODIFY COLUMN touchpoints UInt32")

    writer.insert_now([credit(2, touchpoints=70_000)])

    assert stored(client, "SELECT version, touchpoints FROM credits FINAL") == [(2, 70_000)]
    assert described == ["credits", "credits"]


def test_a_failure_the_schema_does_not_explain_is_raised_once_not_retried(
    client: Client, described: list[str]
) -> None:
    migrate(client)
    writer = ClickHouseWriter(client)
    writer.insert_now([credit(1)])

    with pytest.raises(Exception):  # noqa: B017 - whichever error the type's writer raises
        writer.insert_now([credit(2, touchpoints=70_000)])

    assert described == ["credits", "credits"]
    assert stored(client, "SELECT version FROM credits FINAL") == [(1,)]


def test_wire_values_are_stored_exactly(client: Client) -> None:
    migrate(client)
    writer = ClickHouseWriter(client)
    writer.insert_now(
        [
            credit(
                1,
                touchpoint_at=None,
                order_at="2026-06-01T14:30:00.123456+02:00",
                credit="0.333333333333333333",
                revenue_credit="40.1667",
                is_deleted=True,
                reporting_currency="USD",
                reporting_revenue_credit="44.7858",
                fx_rate="1.115",
                fx_rate_date="2026-05-31",
            )
        ]
    )
    writer.insert_now(
        [{**credit(1), "touchpoint_event_id": "k-2", "order_at": "2026-06-01T12:00Z"}]
    )

    rows = stored(
        client,
        "SELECT touchpoint_event_id, toString(touchpoint_at), toString(order_at), credit,"
        " revenue_credit, is_deleted, reporting_revenue_credit, fx_rate, fx_rate_date"
        " FROM credits ORDER BY touchpoint_event_id",
    )
    assert rows == [
        (
            "k-1",
            None,
            "2026-06-01 12:30:00.123456",
            Decimal("0.333333333333333333"),
            Decimal("40.1667"),
            1,
            Decimal("44.7858"),
            Decimal("1.115"),
            date(2026, 5, 31),
        ),
        (
            "k-2",
            "2026-06-01 10:00:00.000000",
            "2026-06-01 12:00:00.000000",
            Decimal("1"),
            Decimal("120.50"),
            0,
            Decimal("0"),
            Decimal("0"),
            None,
        ),
    ]


def test_rows_inserted_as_the_core_made_them_are_stored_as_their_wire_form_is(
    client: Client,
) -> None:
    """The data-driven pass inserts its rows without a trip through text; a row stored that
    way reads back as the same row sent through the `rows` topic does."""
    migrate(client)
    writer = ClickHouseWriter(client)
    native = CreditRow(
        "o-1", "markov", "k-1", "click", datetime(2026, 6, 1, 10, tzinfo=UTC), 1, 2, "anna",
        "spring", "instagram", "micro", Decimal("0.333333333333333333"), Decimal("40.1667"),
        "EUR", datetime(2026, 6, 1, 12, 30, 0, 123456, tzinfo=UTC), "c-1", 3, False,
        "link_wins", "USD", Decimal("44.7858"), Decimal("1.115"), date(2026, 5, 31),
        ("too_fast_to_order",),
    )  # fmt: skip
    writer.insert_rows_now([native])
    writer.insert_now([{**native.to_wire(), "order_id": "o-2"}])

    columns = (
        "touchpoint_at, order_at, credit, revenue_credit, reporting_revenue_credit, fx_rate,"
        " fx_rate_date, touchpoint_flags, is_deleted"
    )
    [from_rows, from_wire] = stored(
        client, f"SELECT {columns} FROM credits FINAL ORDER BY order_id"
    )
    assert from_rows == from_wire
    assert from_rows[2:4] == (Decimal("0.333333333333333333"), Decimal("40.1667"))
    # read back naive, in UTC
    assert from_rows[1].replace(tzinfo=UTC) == datetime(2026, 6, 1, 12, 30, 0, 123456, tzinfo=UTC)
