"""Events storefronts send (contract section 2), parsed exactly: money never goes through float."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from schemas.currencies import is_currency, minor_unit_digits

EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME = datetime(2200, 1, 1, tzinfo=UTC)
MAX_AMOUNT = Decimal("1e15")


class InvalidEvent(ValueError):
    """An event that breaks the contract; `field` names the offending field ('' for the whole)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def _timestamp_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string")
    return value


def _aware_in_range(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a UTC offset")
    if not EARLIEST_EVENT_TIME <= value < LATEST_EVENT_TIME:
        raise ValueError("timestamp outside 1970-01-01..2200-01-01")
    return value.astimezone(UTC)


def _exact_decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ValueError("must be a decimal number or a string holding one")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise ValueError("not a decimal number") from None
    if not amount.is_finite():
        raise ValueError("must be finite")
    if not 0 < amount < MAX_AMOUNT:
        raise ValueError("must be greater than 0 and less than 1e15")
    return amount


def _iso_currency(value: str) -> str:
    if not is_currency(value):
        raise ValueError("not an ISO 4217 currency code")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_timestamp_text), AfterValidator(_aware_in_range)]
Money = Annotated[Decimal, BeforeValidator(_exact_decimal)]
Id = Annotated[str, Field(min_length=1, max_length=128)]
Text = Annotated[str, Field(max_length=8192)]
Currency = Annotated[str, Field(min_length=3, max_length=3), AfterValidator(_iso_currency)]
Counter = Annotated[StrictInt, Field(ge=0, le=10**15)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)

    event_id: Id
    occurred_at: Timestamp


class Click(_Event):
    type: Literal["click"]
    visitor_id: Id
    customer_id: Id | None = None
    url: Text
    influencer_id: Id | None = None
    campaign_id: Id | None = None
    link_id: Id | None = None
    platform: Annotated[str, Field(max_length=64)] | None = None
    referrer: Text | None = None
    user_agent: Annotated[str, Field(max_length=2048)] | None = None
    ip: Annotated[str, Field(max_length=64)] | None = None


class CodeRedemption(_Event):
    type: Literal["code_redemption"]
    code: Annotated[str, Field(min_length=1, max_length=64)]
    order_id: Id
    customer_id: Id | None = None
    visitor_id: Id | None = None


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    sku: Id
    category: Annotated[str, Field(max_length=64)] | None = None
    quantity: Annotated[StrictInt, Field(gt=0, le=1_000_000)]
    unit_price: Money


def _fits_minor_unit(amount: Decimal, info: ValidationInfo) -> Decimal:
    currency = info.data.get("currency")
    if currency is None:
        return amount
    digits = minor_unit_digits(currency)
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > digits:
        raise ValueError(f"has more decimals than {currency}'s minor unit ({digits})")
    return amount


class Order(_Event):
    type: Literal["order"]
    order_id: Id
    customer_id: Id
    visitor_id: Id | None = None
    currency: Currency
    total: Money
    items: Annotated[list[OrderItem], Field(max_length=1000)] = []

    _total_in_minor_units = field_validator("total")(_fits_minor_unit)


class Refund(_Event):
    type: Literal["refund"]
    order_id: Id
    currency: Currency
    amount: Money
    reason: Annotated[str, Field(max_length=1024)] | None = None

    _amount_in_minor_units = field_validator("amount")(_fits_minor_unit)


class Identify(_Event):
    type: Literal["identify"]
    visitor_id: Id
    customer_id: Id


class ContentMetrics(_Event):
    type: Literal["content_metrics"]
    influencer_id: Id
    post_id: Id
    platform: Annotated[str, Field(min_length=1, max_length=64)]
    campaign_id: Id | None = None
    impressions: Counter = 0
    reach: Counter = 0
    likes: Counter = 0
    comments: Counter = 0
    shares: Counter = 0
    saves: Counter = 0
    followers: Counter = 0


Event = Annotated[
    Click | CodeRedemption | Order | Refund | Identify | ContentMetrics,
    Field(discriminator="type"),
]
EVENT_MODELS: dict[str, type[_Event]] = {
    "click": Click,
    "code_redemption": CodeRedemption,
    "order": Order,
    "refund": Refund,
    "identify": Identify,
    "content_metrics": ContentMetrics,
}
_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
MAX_EVENT_BYTES = 256 * 1024
# Kafka's default limit of a request is 1 MiB: arrays of events are read up to just below it
# and written in records of half that, leaving room for the record's own overhead.
MAX_RECORD_BYTES = 1_000_000
RECORD_TARGET_BYTES = 512 * 1024


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse_json(raw: bytes | str) -> Any:
    """JSON with every non-integer number kept as an exact Decimal.

    orjson parses it (several times faster) when that gives the same document: it refuses what
    it cannot read exactly (a lone surrogate, an integer over 64 bits, NaN), and a document with a
    float, which must become an exact Decimal, goes to the standard parser like those.

    >>> parse_json(b'{"amount": 19.99, "items": [1, 2]}')
    {'amount': Decimal('19.99'), 'items': [1, 2]}
    """
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if not _holds_float(document):
            return document
    return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)


def _holds_float(document: Any) -> bool:
    # A loop over exact types (orjson builds plain dicts and lists): this runs on every event.
    pending = [document]
    while pending:
        value = pending.pop()
        kind = type(value)
        if kind is float:
            return True
        if kind is dict:
            pending.extend(value.values())
        elif kind is list:
            pending.extend(value)
    return False


def decode_event(raw: bytes | str) -> Event:
    """Parse one raw event or raise `InvalidEvent` saying which field is wrong and why.

    >>> decode_event(b'{"type":"identify","event_id":"e1","occurred_at":"2026-01-01T00:00:00Z",'
    ...              b'"visitor_id":"v1","customer_id":"c1"}').customer_id
    'c1'
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("", f"event larger than {MAX_EVENT_BYTES} bytes")
    try:
        payload = parse_json(raw)
    except (ValueError, RecursionError) as error:
        raise InvalidEvent("", f"not valid JSON: {error}") from None
    return validate_event(payload)


@dataclass(frozen=True, slots=True)
class RefusedEvent:
    """An event of a record that breaks the contract: the event as sent, and why."""

    payload: bytes
    error: InvalidEvent


def decode_record(raw: bytes) -> list[Event | RefusedEvent]:
    """The events of one record of the events topic, in order: a record is one event, or a
    JSON array of events (the collector writes each request's events as one record, and
    producers may do the same). Each event of an array is judged on its own.

    >>> [type(item).__name__ for item in decode_record(b'[{"type":"identify","event_id":"e1",'
    ...     b'"occurred_at":"2026-01-01T00:00:00Z","visitor_id":"v","customer_id":"c"},{}]')]
    ['Identify', 'RefusedEvent']
    """
    if raw.lstrip()[:1] != b"[":
        try:
            return [decode_event(raw)]
        except InvalidEvent as error:
            return [RefusedEvent(raw, error)]
    if len(raw) > MAX_RECORD_BYTES:
        return [RefusedEvent(raw, InvalidEvent("", f"record larger than {MAX_RECORD_BYTES} bytes"))]
    try:
        items = parse_json(raw)
    except (ValueError, RecursionError) as error:
        return [RefusedEvent(raw, InvalidEvent("", f"not valid JSON: {error}"))]
    decoded: list[Event | RefusedEvent] = []
    for item in items:
        try:
            # A small record cannot hold an event above the limit: only a large one is measured.
            if len(raw) > MAX_EVENT_BYTES and len(encode_document(item)) > MAX_EVENT_BYTES:
                raise InvalidEvent("", f"event larger than {MAX_EVENT_BYTES} bytes")
            decoded.append(validate_event(item))
        except InvalidEvent as error:
            decoded.append(RefusedEvent(encode_document(item), error))
    return decoded


def encode_document(document: Any) -> bytes:
    """A parsed document as JSON again, its decimals as exact strings."""
    return json.dumps(document, default=_decimal_text, separators=(",", ": ")).encode()


def _decimal_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def encode_record(documents: Sequence[bytes]) -> bytes:
    """Raw events as one record: the event itself when alone, else a JSON array of them."""
    if len(documents) == 1:
        return documents[0]
    return b"[" + b",".join(documents) + b"]"


def records_of(documents: list[bytes], limit: int = RECORD_TARGET_BYTES) -> list[bytes]:
    """The documents as few records as fit under `limit` bytes each, in order: one record per
    request is one read, one routing pass and one acknowledgement for all its events.

    >>> records_of([b'{"a":1}', b'{"b":2}', b'{"c":3}'], limit=18)
    [b'[{"a":1},{"b":2}]', b'{"c":3}']
    """
    records: list[bytes] = []
    chunk: list[bytes] = []
    size = 2  # the brackets
    for document in documents:
        if chunk and size + len(document) + 1 > limit:
            records.append(encode_record(chunk))
            chunk, size = [], 2
        chunk.append(document)
        size += len(document) + 1
    if chunk:
        records.append(encode_record(chunk))
    return records


def validate_event(payload: Any) -> Event:
    if not isinstance(payload, dict):
        raise InvalidEvent("", "an event must be a JSON object")
    event_type = payload.get("type")
    if event_type not in EVENT_MODELS:
        raise InvalidEvent("type", f"unknown event type {str(event_type)[:64]!r}")
    try:
        return _EVENT_ADAPTER.validate_python(payload)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        location = [part for part in first["loc"] if part != event_type]
        raise InvalidEvent(".".join(str(part) for part in location), first["msg"]) from None


def export_json_schemas(directory: Path) -> list[Path]:
    """Write `<type>.schema.json` for every event type (JSON Schema of what we accept)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type, model in EVENT_MODELS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"{event_type}.schema.json"
        path = directory / f"{event_type}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
