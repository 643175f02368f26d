"""`attribution schemas export` gives storefront developers one JSON Schema per event type."""

from __future__ import annotations

import json
from pathlib import Path

from streams.cli import main

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_export_writes_a_schema_per_event_type_with_the_spec_required_fields(
    tmp_path: Path,
) -> None:
    assert main(["schemas", "export", str(tmp_path / "schemas")]) == 0
    schemas = {
        path.name.removesuffix(".schema.json"): json.loads(path.read_text())
        for path in (tmp_path / "schemas").iterdir()
    }
    assert set(schemas) == {
        "click",
        "code_redemption",
        "order",
        "refund",
        "identify",
        "content_metrics",
    }
    assert set(schemas["order"]["required"]) == {
        "type",
        "event_id",
        "occurred_at",
        "order_id",
        "customer_id",
        "currency",
        "total",
    }
    assert set(schemas["refund"]["required"]) >= {"order_id", "amount", "currency"}
    # Money may be a JSON number or a decimal string, never only a float.
    assert {"type": "number"} in schemas["order"]["properties"]["total"]["anyOf"]
    for line in (EXAMPLES / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        schema = schemas[event["type"]]
        assert set(schema["required"]) <= set(event) | {"type"}, event["event_id"]
