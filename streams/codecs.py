"""Bytes on Kafka topics and in tables: compact JSON of the core's wire dicts.

Records of the `rows` topic hold blocks of rows (`attribution.rows.RowBlock`): each table's
column names once, then rows of values, which the sink inserts as columns without looking a
value up by name. Times travel as RFC 3339 text (orjson writes what `isoformat` writes) and
decimals as exact text."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from attribution.rows import RowBlock, wire_row_blocks

ROW_BLOCKS = "blocks"


def encode(wire: dict[str, Any]) -> bytes:
    return orjson.dumps(wire)


def decode(raw: bytes) -> Any:
    return orjson.loads(raw)


def _decimal_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"no wire form for {type(value).__name__} in a row")


def encode_row_blocks(blocks: list[RowBlock]) -> bytes:
    """A `rows` record of these blocks."""
    return orjson.dumps(
        {ROW_BLOCKS: [[block.table, block.columns, block.rows] for block in blocks]},
        default=_decimal_text,
    )


def decode_row_record(raw: bytes) -> list[RowBlock]:
    """The blocks of a `rows` record; also reads the records written before blocks: an array of
    row dicts (before 2026-11-30) or one row dict (before 2026-11-24)."""
    record = orjson.loads(raw)
    if isinstance(record, dict) and ROW_BLOCKS in record:
        return [
            RowBlock(table, tuple(columns), rows) for table, columns, rows in record[ROW_BLOCKS]
        ]
    return wire_row_blocks(record if isinstance(record, list) else [record])
