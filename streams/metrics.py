"""Every Prometheus metric of the worker, in one place, on a registry passed in.

Labels are bounded: event types, table names, dead-letter fields, stages. Never an
order, customer or visitor id.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.events import EVENT_MODELS

BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


_EVENT_FIELDS = frozenset(name for model in EVENT_MODELS.values() for name in model.model_fields)


def type_label(payload: Any) -> str:
    """The event type of a dead letter's payload when it names a known one, else 'unknown'."""
    if isinstance(payload, bytes):
        try:
            payload = json.loads(payload)
        except (ValueError, RecursionError):
            return "unknown"
    kind = payload.get("type") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) and kind in EVENT_MODELS else "unknown"


def field_label(field: str) -> str:
    """A bounded label for the field of a dead letter: 'items.3.sku' counts as 'items',
    a field no event has as 'other', the whole payload as 'payload'."""
    top = field.split(".", 1)[0]
    if not top:
        return "payload"
    return top if top in _EVENT_FIELDS else "other"


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_consumed = Counter(
            "attribution_events_consumed",
            "Raw storefront events read from the events topic.",
            registry=registry,
        )
        self.events_valid = Counter(
            "attribution_events_valid",
            "Events that passed validation, by type.",
            ["type"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "attribution_dead_letters",
            "Events sent to the dead-letter topic, by event type and the offending field.",
            ["type", "field"],
            registry=registry,
        )
        self.collector_events = Counter(
            "attribution_collector_events",
            "Events received by the HTTP collector, by outcome (accepted, invalid).",
            ["outcome"],
            registry=registry,
        )
        self.identity_conflicts = Counter(
            "attribution_identity_conflicts",
            "Later links of a visitor to another customer, ignored (SPEC 2.5).",
            registry=registry,
        )
        self.table_keys = Gauge(
            "attribution_table_keys",
            "Keys held by this worker in each stage table.",
            ["table"],
            registry=registry,
        )
        self.swept_keys = Counter(
            "attribution_swept_keys",
            "Idle keys deleted from a stage table by the event-time sweep.",
            ["table"],
            registry=registry,
        )
        self.sink_rows = Counter(
            "attribution_sink_rows",
            "Rows written to ClickHouse, by table.",
            ["table"],
            registry=registry,
        )
        self.sink_batch_rows = Histogram(
            "attribution_sink_batch_rows",
            "Rows per ClickHouse write.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.sink_batch_seconds = Histogram(
            "attribution_sink_batch_seconds",
            "Time to store one batch in ClickHouse, retries included.",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.sink_failures = Counter(
            "attribution_sink_failures",
            "Failed ClickHouse inserts (each is retried until it succeeds).",
            registry=registry,
        )
