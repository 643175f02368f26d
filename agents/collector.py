"""The HTTP collector on the worker's web port: signed batches of events and Shopify webhooks.

An answer of 200 means every accepted event is in Kafka (acknowledged by the broker);
503 means none of the request's events can be counted on and the client must retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, cast

from faust.web import Request, Response, View

from agents.emit import send_dead_letter
from schemas.collector import (
    MAX_BATCH_BYTES,
    SHOPIFY_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    BatchTooLarge,
    shopify_order_events,
    shopify_refund_events,
    shopify_signature_valid,
    signature_valid,
    split_batch,
)
from schemas.events import InvalidEvent, parse_json, records_of, validate_event
from streams.app import Topology

if TYPE_CHECKING:
    from aiohttp import web  # faust's web driver, not a dependency of ours

log = logging.getLogger(__name__)


async def _read_limited(request: Request) -> bytes | None:
    """The body, or None when it is larger than the limit (checked before reading it all)."""
    # Faust's web driver is aiohttp: its views get aiohttp's requests (the driver casts alike).
    http_request = cast("web.Request", request)
    declared = http_request.content_length
    if declared is not None and declared > MAX_BATCH_BYTES:
        return None
    # read(n) returns whatever the socket has buffered, up to n: loop until the end of the body.
    body = bytearray()
    while len(body) <= MAX_BATCH_BYTES:
        chunk = await http_request.content.read(MAX_BATCH_BYTES + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    return None


async def _produce_all(topology: Topology, documents: list[bytes]) -> bool:
    """Send the documents to the events topic and wait for the broker's acknowledgements,
    all within the collector's timeout (a broker that is down must not hang the request)."""

    async def produce() -> None:
        pending = [await topology.events.send(value=record) for record in records_of(documents)]
        await asyncio.gather(*pending)

    try:
        await asyncio.wait_for(produce(), timeout=topology.settings.collector_ack_timeout_seconds)
    except Exception:
        log.exception("Kafka did not take %d collected events", len(documents))
        return False
    return True


def _field_and_reason(error: Exception) -> tuple[str, str]:
    if isinstance(error, InvalidEvent):
        return error.field, error.message
    return "", str(error)


def _event_id(document: bytes) -> str:
    try:
        value = parse_json(document).get("event_id")
    except (ValueError, AttributeError, RecursionError):
        return ""
    return value if isinstance(value, str) else ""


def register(topology: Topology) -> None:
    app = topology.app
    settings = topology.settings

    @app.page("/v1/events")
    class Events(View):
        async def post(self, request: Request) -> Response:
            body = await _read_limited(request)
            if body is None:
                return self.json({"error": f"body larger than {MAX_BATCH_BYTES} bytes"}, status=413)
            secret = settings.collector_secret.get_secret_value()
            if not signature_valid(secret, body, request.headers.get(SIGNATURE_HEADER)):
                return self.json({"error": f"missing or invalid {SIGNATURE_HEADER}"}, status=401)
            try:
                documents = split_batch(body)
            except BatchTooLarge as error:
                return self.json({"error": str(error)}, status=413)
            except InvalidEvent as error:
                return self.json({"error": error.message}, status=400)
            results: list[dict[str, Any]] = []
            accepted: list[bytes] = []
            for index, document in enumerate(documents):
                try:
                    event = validate_event(parse_json(document))
                except (ValueError, RecursionError) as error:
                    field, reason = _field_and_reason(error)
                    results.append(
                        {"index": index, "status": "invalid", "field": field, "error": reason}
                    )
                    await send_dead_letter(
                        topology,
                        payload=document,
                        field=field,
                        reason=reason,
                        event_id=_event_id(document),
                    )
                    continue
                results.append({"index": index, "status": "accepted", "event_id": event.event_id})
                accepted.append(document)
            if accepted and not await _produce_all(topology, accepted):
                return self.json(
                    {"error": "Kafka unavailable: nothing accepted, retry"}, status=503
                )
            topology.metrics.collector_events.labels("accepted").inc(len(accepted))
            topology.metrics.collector_events.labels("invalid").inc(len(documents) - len(accepted))
            return self.json(
                {
                    "accepted": len(accepted),
                    "invalid": len(documents) - len(accepted),
                    "results": results,
                }
            )

    async def shopify(view: View, request: Request, to_events: Any) -> Response:
        body = await _read_limited(request)
        if body is None:
            return view.json({"error": f"body larger than {MAX_BATCH_BYTES} bytes"}, status=413)
        secret = settings.shopify_webhook_secret.get_secret_value()
        if not shopify_signature_valid(secret, body, request.headers.get(SHOPIFY_SIGNATURE_HEADER)):
            return view.json(
                {"error": f"missing or invalid {SHOPIFY_SIGNATURE_HEADER}"}, status=401
            )
        try:
            events = to_events(parse_json(body))
        except (ValueError, RecursionError) as error:
            field, reason = _field_and_reason(error)
            await send_dead_letter(topology, payload=body, field=field, reason=reason)
            return view.json({"error": reason, "field": field}, status=422)
        documents = [json.dumps(event).encode() for event in events]
        if documents and not await _produce_all(topology, documents):
            return view.json({"error": "Kafka unavailable: retry"}, status=503)
        topology.metrics.collector_events.labels("accepted").inc(len(documents))
        return view.json({"accepted": len(documents)})

    @app.page("/v1/webhooks/shopify/orders")
    class ShopifyOrders(View):
        async def post(self, request: Request) -> Response:
            return await shopify(self, request, shopify_order_events)

    @app.page("/v1/webhooks/shopify/refunds")
    class ShopifyRefunds(View):
        async def post(self, request: Request) -> Response:
            return await shopify(self, request, shopify_refund_events)
