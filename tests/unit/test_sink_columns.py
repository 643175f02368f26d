"""Wire rows become the columns the ClickHouse writer inserts: exact decimals, aware times."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from sinks.clickhouse import to_columns


def test_rows_become_columns_of_converted_values_in_the_rows_order() -> None:
    rows = [
        {
            "table": "orders",
            "order_id": order_id,
            "order_at": order_at,
            "total": total,
            "fx_rate_date": day,
        }
        for order_id, order_at, total, day in (
            ("o-1", "2026-06-01T12:00:00+00:00", "120.50", "2026-05-31"),
            ("o-2", "2026-06-01T14:00:00.000001+02:00", "0.333333333333333333", None),
            ("o-3", "2026-06-01T12:00:00+00:00", "120.50", "2026-05-31"),
        )
    ]

    names, columns = to_columns(rows)

    assert names == ["order_id", "order_at", "total", "fx_rate_date"]
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
