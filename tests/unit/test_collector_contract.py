"""The collector's pure contract: signatures, batch bodies, Shopify payloads as our events."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from schemas.collector import (
    MAX_BATCH_EVENTS,
    BatchTooLarge,
    shopify_order_events,
    shopify_refund_events,
    shopify_signature_valid,
    sign,
    signature_valid,
    split_batch,
)
from schemas.events import InvalidEvent, decode_event

FIXTURES = Path(__file__).parents[1] / "fixtures" / "shopify"


def test_collector_signature_is_checked_and_needs_a_secret() -> None:
    body = b'[{"type":"click"}]'
    assert signature_valid("s3cret", body, sign("s3cret", body))
    assert not signature_valid("s3cret", body + b" ", sign("s3cret", body))
    assert not signature_valid("other", body, sign("s3cret", body))
    assert not signature_valid("s3cret", body, None)
    assert not signature_valid("", body, sign("", body))


def test_shopify_signature_is_base64_hmac_of_the_raw_body() -> None:
    body = (FIXTURES / "orders_create.json").read_bytes()
    header = base64.b64encode(hmac.new(b"shpss_x", body, hashlib.sha256).digest()).decode()
    assert shopify_signature_valid("shpss_x", body, header)
    assert not shopify_signature_valid("shpss_x", body.replace(b"403.00", b"1.00"), header)


def test_batches_are_arrays_or_ndjson_with_exact_decimals() -> None:
    assert split_batch(b'[{"total": 10.10}, {"total": "3"}]') == [
        b'{"total": "10.10"}',
        b'{"total": "3"}',
    ]
    assert split_batch(b'{"n": 1}\r\n{"n": 2}\n') == [b'{"n": 1}', b'{"n": 2}']
    with pytest.raises(InvalidEvent):
        split_batch(b"[{]")
    with pytest.raises(BatchTooLarge):
        split_batch(b"{}\n" * (MAX_BATCH_EVENTS + 1))
    with pytest.raises(BatchTooLarge):
        split_batch(b" " * 1_000_001)


def test_shopify_order_becomes_an_order_and_a_code_redemption() -> None:
    order, redemption = shopify_order_events(
        json.loads((FIXTURES / "orders_create.json").read_text())
    )
    parsed = decode_event(json.dumps(order))
    assert parsed.type == "order"
    assert parsed.order_id == "820982911946154508"
    assert parsed.customer_id == "shopify-115310627314723954"
    assert parsed.visitor_id == "vis-phone-1"
    assert str(parsed.total) == "403.00"
    assert [item.sku for item in parsed.items] == ["IPOD2008PINK", "808950810"]
    assert redemption["code"] == "creator000-10"
    assert redemption["order_id"] == "820982911946154508"


def test_guest_checkout_is_still_an_order() -> None:
    payload = json.loads((FIXTURES / "orders_create.json").read_text())
    payload["customer"] = None
    payload["discount_codes"] = []
    (order,) = shopify_order_events(payload)
    assert order["customer_id"] == "guest-820982911946154508"


def test_shopify_refund_sums_only_successful_refund_transactions() -> None:
    (refund,) = shopify_refund_events(json.loads((FIXTURES / "refunds_create.json").read_text()))
    assert (refund["amount"], refund["currency"], refund["order_id"]) == (
        "199.00",
        "USD",
        "820982911946154508",
    )
    assert decode_event(json.dumps(refund)).type == "refund"


def test_restock_only_refund_gives_no_event_and_bad_payloads_are_invalid() -> None:
    payload = json.loads((FIXTURES / "refunds_create.json").read_text())
    payload["transactions"] = []
    assert shopify_refund_events(payload) == []
    with pytest.raises(InvalidEvent):
        shopify_order_events({"id": 1, "created_at": "2026-01-01T00:00:00", "total_price": "1"})
    with pytest.raises(InvalidEvent):
        shopify_refund_events([])
