"""`attribution erase` in the core: the customer's personal data leaves every stage, and every
credit, before and after the erasure (late refunds and codes included), stays what it was."""

from __future__ import annotations

import json

from attribution.journey import journey_to_wire
from attribution.ledger import ledger_to_wire
from attribution.replay import LocalPipeline
from attribution.rows import CreditRow, CustomerErased, Row
from attribution.rules import Rules
from schemas.events import Event
from tests.unit.helpers import CATALOG, at, click, event, order

CUSTOMER, PSEUDONYM = "ana-1987", "erased-4f1c"

BEFORE: list[Event] = [
    click("k1", at(0), "phone", "anna", ip="203.0.113.7"),
    click("k2", at(1), "laptop", "bob", customer_id=CUSTOMER),
    event("identify", "i1", at(1, 2), visitor_id="phone", customer_id=CUSTOMER),
    event("identify", "i2", at(1, 3), visitor_id="tablet", customer_id=CUSTOMER),
    order("o1", at(2), "order-1", CUSTOMER, "120.00", visitor_id="laptop"),
    order("o2", at(3), "order-2", CUSTOMER, "80.00"),
    click("k3", at(3), "someone-else", "bob", customer_id="other-customer"),
    order("o3", at(4), "order-3", "other-customer", "50.00"),
]
AFTER: list[Event] = [
    event("refund", "r1", at(5), order_id="order-1", currency="USD", amount="20.00"),
    event("code_redemption", "c1", at(3, 1), code="ANNA10", order_id="order-2"),
]


def run(erase: bool) -> tuple[LocalPipeline, list[Row]]:
    emitted: list[Row] = []
    pipeline = LocalPipeline(CATALOG, Rules(), on_rows=emitted.extend)
    pipeline.feed_all(BEFORE)
    if erase:
        pipeline.erase(CUSTOMER, PSEUDONYM, ("tablet",))
    pipeline.feed_all(AFTER)
    return pipeline, emitted


def credit_amounts(pipeline: LocalPipeline) -> list[tuple[object, ...]]:
    return [
        (
            row.order_id,
            row.model,
            row.touchpoint_event_id,
            row.influencer_id,
            row.credit,
            row.revenue_credit,
        )
        for row in pipeline.final_credits()
    ]


def test_every_credit_stays_the_same_through_an_erasure_and_later_refunds_and_codes() -> None:
    erased, _ = run(erase=True)
    kept, _ = run(erase=False)
    assert credit_amounts(erased) == credit_amounts(kept)
    revenue = sum(r.revenue_credit for r in erased.final_credits() if r.model == "linear")
    assert revenue == 120 - 20 + 80 + 50


def test_no_stage_holds_the_customer_or_their_visitors_after_an_erasure() -> None:
    pipeline, _ = run(erase=True)
    assert CUSTOMER not in pipeline.journeys and PSEUDONYM in pipeline.journeys
    assert not {"phone", "laptop", "tablet"} & pipeline.visitors.keys()
    state = json.dumps(
        [journey_to_wire(journey) for journey in pipeline.journeys.values()]
        + [ledger_to_wire(ledger) for ledger in pipeline.ledgers.values()]
    )
    for personal in (CUSTOMER, "phone", "laptop", "tablet"):
        assert personal not in state
    assert "other-customer" in state and "someone-else" in state


def test_rows_after_the_erasure_name_the_pseudonym_and_tell_the_sink_what_to_rewrite() -> None:
    pipeline, emitted = run(erase=True)
    erasures = [row for row in emitted if isinstance(row, CustomerErased)]
    assert erasures == [CustomerErased(CUSTOMER, PSEUDONYM, ("laptop", "phone", "tablet"))]
    after = emitted[emitted.index(erasures[0]) + 1 :]
    restated = [row for row in after if isinstance(row, CreditRow)]
    assert {row.order_id for row in restated} == {"order-1", "order-2"}
    assert {row.customer_id for row in restated} == {PSEUDONYM}
    assert {row.customer_id for row in pipeline.final_credits() if row.order_id != "order-3"} == {
        PSEUDONYM
    }


def test_an_erasure_delivered_twice_changes_nothing_more() -> None:
    pipeline, _ = run(erase=True)
    credits = credit_amounts(pipeline)
    journey = journey_to_wire(pipeline.journeys[PSEUDONYM])
    pipeline.erase(CUSTOMER, PSEUDONYM, ("tablet",))
    assert credit_amounts(pipeline) == credits
    assert journey_to_wire(pipeline.journeys[PSEUDONYM]) == journey


def test_an_unknown_customer_erases_only_the_given_visitors() -> None:
    pipeline, _ = run(erase=False)
    visitors = dict(pipeline.visitors)
    credits = credit_amounts(pipeline)
    pipeline.erase("never-seen", "erased-0000", ("tablet",))
    assert "never-seen" not in pipeline.journeys and "erased-0000" not in pipeline.journeys
    assert pipeline.visitors.keys() == visitors.keys() - {"tablet"}
    assert credit_amounts(pipeline) == credits
