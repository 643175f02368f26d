"""Rows travel to the sink as blocks of values per table and become the columns the ClickHouse
writer inserts: exact decimals, aware times, erasures in their place, older records still read."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from attribution.rows import CustomerErased, OrderRow, Row, RowBlock, row_blocks
from sinks.clickhouse import to_columns
from streams.codecs import decode_row_record, encode, encode_row_blocks


def test_rows_become_columns_of_converted_values_in_the_rows_order() -> None:
    names = ("order_id", "order_at", "total", "fx_rate_date")
    rows = [
        ("o-1", "2026-06-01T12:00:00+00:00", "120.50", "2026-05-31"),
        ("o-2", "2026-06-01T14:00:00.000001+02:00", "0.333333333333333333", None),
        ("o-3", "2026-06-01T12:00:00+00:00", "120.50", "2026-05-31"),
    ]

    columns = to_columns(names, rows)

    assert columns == [
        ["o-1", "o-2", "o-3"],
        [
            datetime(2026, 6, 1, 12, tzinfo=UTC),
            datetime(2026, 6, 1, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
            datetime(2026, 6, 1, 12, tzinfo=UTC),
        ],
        [Decimal("120.50"), Decimal("0.333333333333333333"), Decimal("120.50")],
        [date(2026, 5, 31), None, date(2026, 5, 31)],
    ]
    [times, totals] = columns[1:3]
    assert all(time.tzinfo is not None for time in times)
    assert all(type(total) is Decimal for total in totals)
    assert str(totals[0]) == "120.50"


def order(order_id: str, total: str, at: datetime, rate_date: date | None) -> OrderRow:
    amount = Decimal(total)
    return OrderRow(
        order_id, "c1", at, "EUR", amount, Decimal("0.00"), amount, 2, 3, "USD",
        amount * Decimal("1.1"), Decimal(0), amount * Decimal("1.1"), Decimal("1.1"), rate_date,
    )  # fmt: skip


def test_a_rows_record_carries_each_table_once_and_an_erasure_where_it_was() -> None:
    microseconds = datetime(2026, 6, 1, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    first = order("o-1", "0.333333333333333333", microseconds, None)
    second = order("o-2", "120.50", datetime(2026, 6, 1, 12, tzinfo=UTC), date(2026, 5, 31))
    erased = CustomerErased("c1", "p-1", ("v1", "v2"))
    after = order("o-3", "7", datetime(2026, 6, 2, tzinfo=UTC), None)
    rows: list[Row] = [first, second, erased, after]

    blocks = decode_row_record(encode_row_blocks(row_blocks(rows)))

    assert [(block.table, len(block.rows)) for block in blocks] == [
        ("orders", 2),
        ("erasures", 1),
        ("orders", 1),
    ]
    assert blocks[1].rows == [["c1", "p-1", ["v1", "v2"]]]
    orders = blocks[0]
    columns = dict(zip(orders.columns, to_columns(orders.columns, orders.rows), strict=True))
    assert columns["total"] == [Decimal("0.333333333333333333"), Decimal("120.50")]
    assert str(columns["total"][1]) == "120.50"
    assert columns["order_at"] == [microseconds, second.order_at]
    assert columns["fx_rate_date"] == [None, date(2026, 5, 31)]
    # the text is what the rows' dicts carried before blocks
    wire = first.to_wire()
    assert orders.columns == tuple(name for name in wire if name != "table")
    assert list(orders.rows[0]) == [value for name, value in wire.items() if name != "table"]


def test_records_written_before_blocks_are_still_read() -> None:
    rows = [
        order("o-1", "10", datetime(2026, 6, 1, tzinfo=UTC), None),
        order("o-2", "20", datetime(2026, 6, 1, tzinfo=UTC), None),
    ]
    current = decode_row_record(encode_row_blocks(row_blocks(rows)))
    array = decode_row_record(b"[" + b",".join(encode(row.to_wire()) for row in rows) + b"]")
    single = decode_row_record(encode(rows[0].to_wire()))

    def table_columns(blocks: list[RowBlock]) -> list[list[object]]:
        merged = [values for block in blocks for values in block.rows]
        return to_columns(blocks[0].columns, merged)

    assert table_columns(array) == table_columns(current)
    assert table_columns(single) == [column[:1] for column in table_columns(current)]
