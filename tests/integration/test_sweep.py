"""Idle keys leave the worker's tables (memory stays bounded), and stay gone after a restart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.helpers import feed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _event(kind: str, event_id: str, day: int, **fields: object) -> bytes:
    """The event as the storefront sends it: one JSON line."""
    occurred_at = (T0 + timedelta(days=day)).isoformat()
    return json.dumps(
        {"type": kind, "event_id": event_id, "occurred_at": occurred_at, **fields}
    ).encode()


def test_customers_idle_past_every_window_are_swept(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings.model_copy(update={"sweep_interval_seconds": 0.5})
    old, new = "cust-old", "cust-new"
    events = [
        _event(
            "click",
            "k-old",
            0,
            visitor_id="v-old",
            customer_id=old,
            url="https://s/",
            influencer_id="anna",
        ),
        _event(
            "order",
            "o-old",
            1,
            order_id="order-old",
            customer_id=old,
            currency="EUR",
            total="40.00",
        ),
        # 200 days later (still in the past, so the wall clock does not hold the watermark):
        # the old customer is beyond the 180-day refund window and 37 days of clicks.
        _event(
            "click",
            "k-new",
            201,
            visitor_id="v-new",
            customer_id=new,
            url="https://s/",
            influencer_id="anna",
        ),
        _event(
            "order",
            "o-new",
            201,
            order_id="order-new",
            customer_id=new,
            currency="EUR",
            total="60.00",
        ),
    ]
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        feed(settings, events[:2])
        wait_until(
            lambda: worker.sql("SELECT count() FROM orders FINAL") == [[1]],
            timeout=60,
            what="the old order in ClickHouse",
        )
        feed(settings, events[2:])
        wait_until(
            lambda: worker.metric("attribution_swept_keys_total", table="journeys") == 1,
            timeout=60,
            what="the old customer's journey swept",
        )
        assert worker.metric("attribution_table_keys", table="journeys") == 1
        assert worker.metric("attribution_swept_keys_total", table="visitors") == 1
        assert worker.metric("attribution_swept_keys_total", table="ledgers") == 1
        # The credits of the old order stay in ClickHouse: sweeping forgets state, not results.
        wait_until(
            lambda: worker.sql("SELECT count() FROM orders FINAL") == [[2]],
            timeout=60,
            what="both orders in ClickHouse",
        )
        assert worker.stop() == 0

        worker.start()  # the tombstones are in the changelogs: the old keys do not come back
        wait_until(
            lambda: worker.metric("attribution_table_keys", table="journeys") > 0,
            timeout=60,
            what="the journeys restored after the restart",
        )
        assert worker.metric("attribution_table_keys", table="journeys") == 1
        assert worker.metric("attribution_table_keys", table="visitors") == 1
    finally:
        worker.stop()
