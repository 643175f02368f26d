"""No input breaks decoding: anything is either a valid event or an `InvalidEvent` with a reason."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attribution.replay import LocalPipeline
from attribution.rules import Rules
from schemas.collector import BatchTooLarge, split_batch
from schemas.events import InvalidEvent, decode_event
from tests.unit.helpers import CATALOG

EVENT_TYPES = ["click", "code_redemption", "order", "refund", "identify", "content_metrics"]
FIELDS = [
    "event_id",
    "occurred_at",
    "visitor_id",
    "customer_id",
    "url",
    "influencer_id",
    "order_id",
    "currency",
    "total",
    "amount",
    "code",
    "items",
    "impressions",
    "post_id",
    "platform",
    "link_id",
]
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
    st.sampled_from(
        [
            "2026-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "9999-12-31T23:59:59+14:00",
            "2026-01-01T00:00:00",
            "0.001",
            "1e400",
            "NaN",
            "-0",
            "USD",
            "XXX",
            "JPY",
            "",
            "x" * 5000,
        ]
    ),
)
JSON_VALUES = st.recursive(
    ODD_VALUES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
EVENT_LIKE = st.fixed_dictionaries(
    {"type": st.sampled_from(EVENT_TYPES)},
    optional={name: JSON_VALUES for name in FIELDS},
)


def _survives(raw: bytes) -> None:
    try:
        event = decode_event(raw)
    except InvalidEvent as error:
        assert error.message
        return
    # A valid event is one the pipeline can process.
    LocalPipeline(CATALOG, Rules()).feed(event)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes(raw: bytes) -> None:
    _survives(raw)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(EVENT_LIKE)
def test_event_shaped_json_with_wrong_types_and_boundaries(payload: dict[str, Any]) -> None:
    _survives(json.dumps(payload, allow_nan=True).encode())


def test_deep_and_huge_json_is_refused_with_a_reason() -> None:
    for raw in (
        b"[" * 100_000 + b"]" * 100_000,
        b'{"type": "click", "url": "' + b"x" * 300_000 + b'"}',
    ):
        try:
            decode_event(raw)
        except InvalidEvent as error:
            assert error.message
        else:
            raise AssertionError("accepted")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_collector_bodies_never_break_splitting(body: bytes) -> None:
    with contextlib.suppress(InvalidEvent, BatchTooLarge):
        split_batch(body)
