"""The collector's pure contract: signatures, batch bodies, Shopify payloads as our events."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from schemas.events import (
    MAX_EVENT_BYTES,
    InvalidEvent,
    RefusedEvent,
    decode_event,
    decode_record,
    encode_record,
    records_of,
)

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


def _click(event_id: str, url: str = "https://shop.example/?utm_content=anna") -> bytes:
    return json.dumps(
        {
            "type": "click",
            "event_id": event_id,
            "occurred_at": "2026-11-20T10:00:00Z",
            "visitor_id": "v1",
            "url": url,
        }
    ).encode()


def test_a_record_of_many_events_judges_each_on_its_own() -> None:
    record = b'[%s,{"type":"order","event_id":"o1","total":"NaN"},%s]' % (
        _click("c1"),
        _click("c2"),
    )
    first, refused, last = decode_record(record)
    assert not isinstance(first, RefusedEvent) and first.event_id == "c1"
    assert not isinstance(last, RefusedEvent) and last.event_id == "c2"
    assert isinstance(refused, RefusedEvent)
    # The dead letter carries the refused event alone, not the whole record.
    assert json.loads(refused.payload) == {"type": "order", "event_id": "o1", "total": "NaN"}


def test_an_oversized_event_in_a_record_is_refused_alone_and_an_oversized_record_whole() -> None:
    big = _click("big", url="https://shop.example/?" + "u" * MAX_EVENT_BYTES)
    decoded = decode_record(encode_record([_click("c1"), big]))
    assert [type(item).__name__ for item in decoded] == ["Click", "RefusedEvent"]
    assert isinstance(decoded[1], RefusedEvent)
    assert "larger than" in decoded[1].error.message
    [whole] = decode_record(encode_record([big] * 4))
    assert isinstance(whole, RefusedEvent)
    assert "record larger than" in whole.error.message


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=40),
    slack=st.integers(min_value=0, max_value=2000),
)
def test_records_stay_under_their_limit_and_keep_every_event_in_order(
    sizes: list[int], slack: int
) -> None:
    documents = [
        _click(f"c{index}", url=f"https://shop.example/?p={'x' * size}")
        for index, size in enumerate(sizes)
    ]
    limit = max(len(document) for document in documents) + 2 + slack
    records = records_of(documents, limit)
    assert all(len(record) <= limit for record in records)
    events = [item for record in records for item in decode_record(record)]
    assert [getattr(event, "event_id", None) for event in events] == [
        f"c{index}" for index in range(len(sizes))
    ]
