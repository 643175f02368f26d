"""Contract 5, late events: final credits do not depend on arrival order for events that arrive
no more than the allowed lateness after newer ones, with customers whose events are weeks apart;
a refund restates an order over the touchpoints it already had."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attribution.lateness import LatenessTracker
from attribution.replay import LocalPipeline
from attribution.rules import Rules
from schemas.events import Event, validate_event
from simulation.storefront import Storefront
from tests.unit.helpers import CATALOG, arrival_within_lateness, click, event, order

CreditFacts = tuple[str, str, str, str, Decimal, Decimal]


def final_credits(events: list[Event], rules: Rules | None = None) -> set[CreditFacts]:
    pipeline = LocalPipeline(CATALOG, rules or Rules())
    pipeline.feed_all(events)
    return _facts(pipeline)


def _facts(pipeline: LocalPipeline) -> set[CreditFacts]:
    return {
        (r.order_id, r.model, r.touchpoint_event_id, r.influencer_id, r.credit, r.revenue_credit)
        for r in pipeline.final_credits()
    }


def linear(credits: set[CreditFacts], order_id: str) -> dict[str, Decimal]:
    return {
        influencer or "-": revenue
        for order, model, _, influencer, _, revenue in credits
        if order == order_id and model == "linear"
    }


def test_a_late_refund_scales_the_credit_of_the_clicks_its_order_had() -> None:
    """Clicks of January stay with their order after a February order moved the journey on."""
    clicks_and_orders = [
        click("c1", "2026-01-01T10:00:00Z", "v1", "anna", customer_id="cu1"),
        click("c2", "2026-01-06T10:00:00Z", "v1", "bob", customer_id="cu1"),
        order("o1", "2026-01-11T10:00:00Z", "O1", "cu1", "100.00"),
        order("o2", "2026-02-25T10:00:00Z", "O2", "cu1", "50.00"),
    ]
    refund = event(
        "refund", "r1", "2026-03-01T10:00:00Z", order_id="O1", amount="10.00", currency="USD"
    )

    before = linear(final_credits(clicks_and_orders), "O1")
    after = linear(final_credits([*clicks_and_orders, refund]), "O1")

    assert before == {"anna": Decimal("50.00"), "bob": Decimal("50.00")}
    assert after == {"anna": Decimal("45.00"), "bob": Decimal("45.00")}


def test_an_older_order_arriving_after_a_newer_one_keeps_the_clicks_of_its_lookback() -> None:
    linked_clicks = [
        event("identify", "id", "2026-04-06T09:00:00Z", visitor_id="v9", customer_id="cu9"),
        click("k0406", "2026-04-06T10:00:00Z", "v9", "anna"),
        *(click(f"k04{day}", f"2026-04-{day}T10:00:00Z", "v9", "bob") for day in (12, 20, 29)),
    ]
    orders = [
        order(f"o05{day}", f"2026-05-{day}T10:00:00Z", f"O05{day}", "cu9", "80.00")
        for day in ("03", "10", "14")
    ]

    in_time = final_credits([*linked_clicks, *orders])
    newest_order_first = final_credits([*linked_clicks, *reversed(orders)])

    assert newest_order_first == in_time
    assert linear(in_time, "O0503")["anna"] == Decimal("20.00")


def test_refunds_are_judged_in_event_time_order_whatever_their_arrival() -> None:
    """Two refunds that together exceed the total: the one that happened later is refused."""
    placed = order("o", "2026-03-01T10:00:00Z", "O1", "cu1", "100.00")
    first = event(
        "refund", "r1", "2026-03-05T10:00:00Z", order_id="O1", amount="70.00", currency="USD"
    )
    second = event(
        "refund", "r2", "2026-03-06T10:00:00Z", order_id="O1", amount="60.00", currency="USD"
    )

    outcomes = []
    for arrival in ([placed, first, second], [placed, second, first], [second, first, placed]):
        pipeline = LocalPipeline(CATALOG, Rules())
        pipeline.feed_all(arrival)
        outcomes.append(
            (_facts(pipeline), sorted((r.event_id, r.field) for r in pipeline.rejections))
        )

    assert all(outcome == outcomes[0] for outcome in outcomes)
    credits, rejections = outcomes[0]
    assert rejections == [("r2", "amount")]
    assert sum(revenue for o, model, *_, revenue in credits if model == "linear") == Decimal(
        "30.00"
    )


def _sparse_storefront(seed: int) -> tuple[LocalPipeline, list[Event]]:
    storefront = Storefront(
        datetime(2026, 6, 1, tzinfo=UTC), seed=seed, influencers_count=6, sparse_share=0.5
    )
    parsed = [
        validate_event(json.loads(json.dumps(raw), parse_float=Decimal))
        for raw in storefront.events(50, spread=timedelta(days=20))
    ]
    return LocalPipeline(storefront.static_catalog(), Rules()), parsed


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=10_000), arrival_seed=st.integers())
def test_sparse_customers_get_the_same_credits_in_any_arrival_within_the_allowed_lateness(
    seed: int, arrival_seed: int
) -> None:
    in_file_order, events = _sparse_storefront(seed)
    in_file_order.feed_all(events)
    rng = random.Random(arrival_seed)
    redelivered = events + rng.sample(events, len(events) // 10)
    permuted, _ = _sparse_storefront(seed)
    permuted.feed_all(arrival_within_lateness(redelivered, Rules().allowed_lateness, rng))

    assert _facts(permuted) == _facts(in_file_order)
    assert sorted(r.event_id for r in permuted.rejections) == sorted(
        r.event_id for r in in_file_order.rejections
    )


def test_events_later_than_the_allowed_lateness_are_counted_by_type() -> None:
    tracker = LatenessTracker(timedelta(days=14))
    at = datetime(2026, 3, 1, tzinfo=UTC)

    verdicts = [
        tracker.observe(at + timedelta(days=20)),
        tracker.observe(at + timedelta(days=6)),  # 14 days behind: still in time
        tracker.observe(at + timedelta(days=5)),  # 15 days behind: late
    ]

    assert verdicts == [False, False, True]
