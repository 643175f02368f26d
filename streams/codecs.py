"""Bytes on Kafka topics and in tables: compact JSON of the core's wire dicts."""

from __future__ import annotations

from typing import Any

import orjson


def encode(wire: dict[str, Any]) -> bytes:
    return orjson.dumps(wire)


def decode(raw: bytes) -> Any:
    return orjson.loads(raw)
