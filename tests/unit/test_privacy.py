"""A click's IP address and user agent never leave routing raw: keyed hashes or nothing."""

from __future__ import annotations

import json

from attribution.privacy import keyed_hash, scrub_personal_data, scrub_personal_text
from attribution.routing import route_event
from attribution.rows import ClickRow
from schemas.events import validate_event
from tests.unit.helpers import CATALOG

IP, AGENT = "203.0.113.7", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X)"


def click_row(pii_key: bytes) -> ClickRow:
    event = validate_event(
        {
            "type": "click",
            "event_id": "k1",
            "occurred_at": "2026-04-01T09:00:00Z",
            "visitor_id": "v1",
            "url": "https://shop.example/?utm_content=anna",
            "ip": IP,
            "user_agent": AGENT,
        }
    )
    rows = [row for row in route_event(event, CATALOG, pii_key).rows if isinstance(row, ClickRow)]
    assert len(rows) == 1
    return rows[0]


def test_a_keyed_click_keeps_hashes_and_no_raw_value() -> None:
    row = click_row(b"secret")
    assert (row.ip_hash, row.user_agent_hash) == (
        keyed_hash(IP, b"secret"),
        keyed_hash(AGENT, b"secret"),
    )
    assert len(row.ip_hash) == 32 and row.ip_hash != keyed_hash(IP, b"another")
    wire = json.dumps(row.to_wire())
    assert IP not in wire and "Mozilla" not in wire


def test_without_a_key_neither_is_kept() -> None:
    row = click_row(b"")
    assert (row.ip_hash, row.user_agent_hash) == ("", "")


def test_dead_letter_documents_keep_personal_fields_only_as_hashes() -> None:
    document = {
        "type": "click",
        "ip": IP,
        "user_agent": AGENT,
        "customer": {"email": "ana@example.com", "addresses": [{"address1": "1 Main St"}]},
        "total": "NaN",
    }
    scrubbed = scrub_personal_data(document, b"secret")
    text = json.dumps(scrubbed)
    for raw in (IP, AGENT, "ana@example.com", "1 Main St"):
        assert raw not in text
    assert scrubbed["ip"] == keyed_hash(IP, b"secret")
    assert scrubbed["total"] == "NaN" and document["ip"] == IP


def test_documents_as_deep_as_the_json_parser_allows_are_scrubbed() -> None:
    depth = 900
    document = json.loads("[" * depth + json.dumps({"ip": IP}) + "]" * depth)
    assert IP not in json.dumps(scrub_personal_data(document, b""))


def test_payloads_that_are_not_json_lose_personal_text_too() -> None:
    raw = b'{"type": "click", "ip": "203.0.113.7", "user_agent": "Mozilla \\"x\\"", "broken'
    scrubbed = scrub_personal_text(raw, b"secret")
    assert b"203.0.113.7" not in scrubbed and b"Mozilla" not in scrubbed
    assert keyed_hash(IP, b"secret").encode() in scrubbed and scrubbed.endswith(b'"broken')
