"""The HTTP collector's contract: signatures, batch bodies, and Shopify webhooks as our events.

Pure functions (no I/O): the worker's views call them, tests exercise them directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from decimal import Decimal
from typing import Any

from schemas.events import InvalidEvent, encode_document, parse_json, validate_event

MAX_BATCH_BYTES = 1_000_000
MAX_BATCH_EVENTS = 1000
SIGNATURE_HEADER = "X-Signature"
SHOPIFY_SIGNATURE_HEADER = "X-Shopify-Hmac-Sha256"


class BatchTooLarge(ValueError):
    pass


def sign(secret: str, body: bytes) -> str:
    """The collector signature of a body: `sha256=` and the hex HMAC-SHA256.

    >>> sign("s3cret", b"[]")
    'sha256=920fbe8da6e51cf8315bd3ce5b63be1439ac418df0cd2abbf6e304e43b71eff9'
    """
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of the collector signature; never valid without a secret."""
    if not secret or not header:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


def shopify_signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """Shopify's check: base64 of the HMAC-SHA256 of the raw body, compared in constant time."""
    if not secret or not header:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, header.strip().encode())


def split_batch(body: bytes) -> list[bytes]:
    """A JSON array or NDJSON body as one raw JSON document per event.

    Array items are re-encoded with decimals kept exact (as strings); NDJSON lines are
    passed on as they came. Raises `InvalidEvent` when the body is not either, and
    `BatchTooLarge` above `MAX_BATCH_BYTES` or `MAX_BATCH_EVENTS`.

    >>> split_batch(b'{"a": 1}\\n\\n{"b": 2.50}')
    [b'{"a": 1}', b'{"b": 2.50}']
    >>> split_batch(b'[{"total": 2.50}]')
    [b'{"total": "2.50"}']
    """
    if len(body) > MAX_BATCH_BYTES:
        raise BatchTooLarge(f"body larger than {MAX_BATCH_BYTES} bytes")
    if body.lstrip()[:1] == b"[":
        try:
            items = parse_json(body)
        except (ValueError, RecursionError) as error:
            raise InvalidEvent("", f"not valid JSON: {error}") from None
        documents = [encode_document(item) for item in items]
    else:
        documents = [line.strip() for line in body.splitlines() if line.strip()]
    if len(documents) > MAX_BATCH_EVENTS:
        raise BatchTooLarge(f"more than {MAX_BATCH_EVENTS} events in one request")
    return documents


# --- Shopify webhooks -----------------------------------------------------------------


def shopify_order_events(payload: Any) -> list[dict[str, Any]]:
    """An `orders/create` webhook as an order event and one code redemption per discount code.

    The customer is Shopify's customer id (a guest checkout uses the order id, so the order
    is still counted, unattributed unless a code names an influencer). A storefront that
    stores its visitor id as a cart attribute named `visitor_id` links the order to that
    browser's clicks.
    """
    if not isinstance(payload, dict) or "id" not in payload:
        raise InvalidEvent("id", "a Shopify order needs an id")
    order_id = str(payload["id"])
    occurred_at = payload.get("created_at")
    customer = payload.get("customer") or {}
    customer_id = f"shopify-{customer['id']}" if customer.get("id") else f"guest-{order_id}"
    order: dict[str, Any] = {
        "type": "order",
        "event_id": f"shopify-order-{order_id}",
        "occurred_at": occurred_at,
        "order_id": order_id,
        "customer_id": customer_id,
        "currency": payload.get("currency"),
        "total": payload.get("total_price"),
        "items": [
            {
                "sku": str(item.get("sku") or item.get("variant_id") or item.get("id") or ""),
                "category": item.get("product_type") or None,
                "quantity": item.get("quantity"),
                "unit_price": item.get("price"),
            }
            for item in payload.get("line_items") or []
        ],
    }
    visitor = _note_attribute(payload, "visitor_id")
    if visitor:
        order["visitor_id"] = visitor
    events = [order]
    for discount in payload.get("discount_codes") or []:
        code = str(discount.get("code") or "")
        if code:
            events.append(
                {
                    "type": "code_redemption",
                    "event_id": f"shopify-order-{order_id}-code-{code.upper()}",
                    "occurred_at": occurred_at,
                    "code": code,
                    "order_id": order_id,
                    "customer_id": customer_id,
                }
            )
    return [_checked(event) for event in events]


def shopify_refund_events(payload: Any) -> list[dict[str, Any]]:
    """A `refunds/create` webhook as one refund event: the sum of its successful refund
    transactions. A refund that moved no money (a restock only) gives no event."""
    if not isinstance(payload, dict) or "id" not in payload or "order_id" not in payload:
        raise InvalidEvent("order_id", "a Shopify refund needs an id and an order_id")
    transactions = [
        transaction
        for transaction in payload.get("transactions") or []
        if transaction.get("kind") == "refund" and transaction.get("status") == "success"
    ]
    if not transactions:
        return []
    currencies = {str(transaction.get("currency")) for transaction in transactions}
    if len(currencies) != 1:
        raise InvalidEvent(
            "transactions", f"refund transactions in several currencies {currencies}"
        )
    try:
        amount = sum(
            (Decimal(str(transaction["amount"])) for transaction in transactions), Decimal(0)
        )
    except (KeyError, ArithmeticError):
        raise InvalidEvent("transactions", "a refund transaction without a valid amount") from None
    refund = {
        "type": "refund",
        "event_id": f"shopify-refund-{payload['id']}",
        "occurred_at": payload.get("created_at"),
        "order_id": str(payload["order_id"]),
        "amount": str(amount),
        "currency": currencies.pop(),
        "reason": str(payload.get("note") or ""),
    }
    return [_checked(refund)]


def _note_attribute(payload: dict[str, Any], name: str) -> str:
    for attribute in payload.get("note_attributes") or []:
        if isinstance(attribute, dict) and attribute.get("name") == name:
            return str(attribute.get("value") or "")
    return ""


def _checked(event: dict[str, Any]) -> dict[str, Any]:
    """The event, once it passes the same contract as any other event."""
    validate_event(event)
    return event
