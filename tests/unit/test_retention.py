"""State is bounded: keys that can no longer matter are swept, and sweeping changes no credit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from attribution.replay import LocalPipeline
from attribution.rules import Rules
from schemas.events import validate_event
from simulation.storefront import Storefront
from tests.unit.helpers import CATALOG, T0, at, click, event, order


def test_idle_keys_are_dropped_and_active_ones_kept() -> None:
    pipeline = LocalPipeline(CATALOG, Rules())
    pipeline.feed_all(
        [
            click("k1", at(0), "v-anon", "anna"),  # anonymous visitor, never linked
            click("k2", at(0), "v-linked", "bob", customer_id="c-old"),
            order("o1", at(1), "order-old", "c-old", "20.00"),
            click("k3", at(200), "v-new", "anna", customer_id="c-new"),
        ]
    )
    watermark = T0 + timedelta(days=200)
    # Retention: anonymous clicks 30 + 7 days, identity links 180 days, journeys and
    # ledgers max(37, 180 refund days) after their newest event.
    dropped = pipeline.sweep(watermark)
    assert dropped == 4  # v-anon, v-linked, the ledger of order-old, the journey of c-old
    assert set(pipeline.visitors) == {"v-new"}
    assert set(pipeline.journeys) == {"c-new"}
    assert pipeline.ledgers == {}


def test_a_key_inside_every_window_survives_the_sweep() -> None:
    pipeline = LocalPipeline(CATALOG, Rules())
    pipeline.feed_all(
        [
            click("k1", at(0), "v1", "anna", customer_id="c1"),
            order("o1", at(1), "order-1", "c1", "20.00"),
        ]
    )
    # Day 180: the order may still be refunded (refund window 180 days after day 1).
    assert pipeline.sweep(T0 + timedelta(days=180)) == 0
    pipeline.feed(event("refund", "r1", at(180), order_id="order-1", amount="5.00", currency="USD"))
    revenue = sum(row.revenue_credit for row in pipeline.final_credits() if row.model == "linear")
    assert revenue == 15


def test_sweeping_as_time_passes_leaves_every_credit_unchanged() -> None:
    storefront = Storefront(datetime(2026, 1, 1, tzinfo=UTC), seed=11, influencers_count=12)
    events = [validate_event(item) for item in storefront.events(1500, timedelta(days=240))]
    swept = LocalPipeline(storefront.static_catalog(), Rules())
    whole = LocalPipeline(storefront.static_catalog(), Rules())
    dropped = 0
    newest = events[0].occurred_at
    for index, item in enumerate(events):
        swept.feed(item)
        whole.feed(item)
        newest = max(newest, item.occurred_at)
        if index % 500 == 0:
            dropped += swept.sweep(newest)
    assert dropped > 0
    assert swept.final_credits() == whole.final_credits()
    assert len(swept.journeys) < len(whole.journeys)


def test_the_clicks_of_one_visitor_keep_one_copy_of_its_id() -> None:
    """Each parsed event brings its own copy of the visitor id; the clicks stored for it, waiting
    with the visitor and forwarded to the customer's journey, share one."""
    pipeline = LocalPipeline(CATALOG, Rules())
    for number in range(3):
        copy_of_this_event = "".join(["v-", "returning"])
        pipeline.feed(click(f"k{number}", at(number), copy_of_this_event, "anna"))
    pipeline.feed(event("identify", "i1", at(4), visitor_id="v-returning", customer_id="c1"))

    stored = [
        *pipeline.visitors["v-returning"].waiting.values(),
        *(
            stored_click.touchpoint
            for journey in pipeline.journeys.values()
            for stored_click in journey.clicks.values()
        ),
    ]
    assert len(stored) == 6
    assert len({id(touchpoint.visitor_id) for touchpoint in stored}) == 1
