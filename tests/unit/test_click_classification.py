"""Invalid traffic: every influencer click is classified (valid, suspicious, invalid, with its
reasons) and the click policy decides what each earns; classification and credits do not depend
on arrival order, a late click reclassifies its neighbours and restates their orders."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attribution.messages import Touchpoint
from attribution.replay import LocalPipeline
from attribution.rows import ClickClassificationRow, CreditRow, Row
from attribution.rules import ClickPolicy, Rules
from attribution.traffic import MAX_CLICKS_KEPT
from schemas.events import Event, validate_event
from simulation.storefront import Storefront
from tests.unit import helpers
from tests.unit.helpers import CATALOG, arrival_within_lateness, event, order

PII_KEY = b"test-salt"
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Safari/604.1"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def click(
    event_id: str, when: str, visitor: str, influencer: str, ip: str = "198.51.100.7", **fields: Any
) -> Event:
    fields.setdefault("user_agent", BROWSER)
    return helpers.click(event_id, when, visitor, influencer, ip=ip, **fields)


class Run:
    def __init__(self, events: list[Event], policy: ClickPolicy = ClickPolicy.MODERATE) -> None:
        self.rows: list[Row] = []
        self.pipeline = LocalPipeline(
            CATALOG, Rules(click_policy=policy), on_rows=self.rows.extend, pii_key=PII_KEY
        )
        self.pipeline.feed_all(events)

    def classification(self, event_id: str) -> tuple[str, tuple[str, ...]]:
        newest = max(
            (
                r
                for r in self.rows
                if isinstance(r, ClickClassificationRow) and r.event_id == event_id
            ),
            key=lambda row: row.version,
        )
        return newest.status, newest.reasons

    def linear(self, order_id: str) -> dict[str, Decimal]:
        return {
            row.touchpoint_event_id or "-": row.revenue_credit
            for row in self.pipeline.final_credits()
            if row.order_id == order_id and row.model == "linear"
        }

    def credit_rows(self, order_id: str) -> list[CreditRow]:
        return [row for row in self.pipeline.final_credits() if row.order_id == order_id]


def test_a_known_crawler_earns_nothing_and_is_kept_as_invalid() -> None:
    run = Run(
        [
            click(
                "bot", "2026-03-01T10:00:00Z", "v1", "bob", user_agent=GOOGLEBOT, customer_id="c1"
            ),
            click("k1", "2026-03-01T11:00:00Z", "v1", "anna", customer_id="c1"),
            order("o1", "2026-03-01T12:00:00Z", "O1", "c1", "60.00"),
        ]
    )

    assert run.classification("bot") == ("invalid", ("known_crawler",))
    assert run.classification("k1") == ("valid", ())
    assert run.linear("O1") == {"k1": Decimal("60.00")}


def test_a_blank_user_agent_is_suspicious_credited_and_flagged_except_under_strict() -> None:
    events = [
        click("k1", "2026-03-01T10:00:00Z", "v1", "anna", user_agent=" ", customer_id="c1"),
        order("o1", "2026-03-01T12:00:00Z", "O1", "c1", "60.00"),
    ]

    moderate, strict = Run(events), Run(events, ClickPolicy.STRICT)

    assert moderate.classification("k1") == ("suspicious", ("empty_user_agent",))
    [flagged] = [row for row in moderate.credit_rows("O1") if row.model == "linear"]
    assert (flagged.revenue_credit, flagged.touchpoint_flags) == (
        Decimal("60.00"),
        ("empty_user_agent",),
    )
    assert strict.linear("O1") == {"-": Decimal("60.00")}  # unattributed


def test_a_second_click_of_the_same_device_within_an_hour_counts_once() -> None:
    run = Run(
        [
            click("k1", "2026-03-01T10:00:00Z", "v1", "anna", customer_id="c1"),
            click("k2", "2026-03-01T10:40:00Z", "v1", "anna", customer_id="c1"),
            click(
                "k3", "2026-03-01T10:50:00Z", "v1", "anna", customer_id="c1", user_agent="Other/1"
            ),
            click("k4", "2026-03-01T11:45:00Z", "v1", "anna", customer_id="c1"),
            order("o1", "2026-03-01T12:00:00Z", "O1", "c1", "90.00"),
        ]
    )

    assert [run.classification(k)[1] for k in ("k1", "k2", "k3", "k4")] == [
        (),
        ("duplicate_click",),
        (),  # another user agent: another device
        (),  # 65 minutes after k2
    ]
    assert run.linear("O1") == {
        "k1": Decimal("30.00"),
        "k3": Decimal("30.00"),
        "k4": Decimal("30.00"),
    }


def farm(first: datetime, clicks: int, ip: str = "203.0.113.9") -> list[Event]:
    """A click farm: many visitors of one address clicking bob's link within minutes."""
    return [
        click(f"farm-{n}", (first + timedelta(seconds=20 * n)).isoformat(), f"fv{n}", "bob", ip=ip)
        for n in range(clicks)
    ]


def shoppers_click_from_the_farm_address() -> Event:
    """A shopper's own browser behind the farm's address: only the burst rule catches it."""
    return click(
        "k-bob",
        "2026-03-01T10:03:00Z",
        "v1",
        "bob",
        ip="203.0.113.9",
        customer_id="c1",
        user_agent="Shopper/1",
    )


def test_a_burst_from_one_address_is_invalid_and_its_click_earns_nothing() -> None:
    start = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    shopper = [
        shoppers_click_from_the_farm_address(),
        click("k-anna", "2026-03-01T11:00:00Z", "v1", "anna", ip="198.51.100.7", customer_id="c1"),
        order("o1", "2026-03-01T12:00:00Z", "O1", "c1", "80.00"),
    ]

    run = Run([*farm(start, 10), *shopper])  # 11 clicks on bob in 10 minutes: over the limit

    assert run.classification("k-bob") == ("invalid", ("click_burst",))
    assert run.classification("farm-0") == ("invalid", ("click_burst",))
    assert run.linear("O1") == {"k-anna": Decimal("80.00")}
    ten = Run([*farm(start, 9), *shopper])  # 10 clicks: at the limit, not over it
    assert ten.classification("k-bob") == ("valid", ())


def test_a_click_seconds_before_its_order_earns_nothing_for_it() -> None:
    events = [
        click("k1", "2026-03-01T10:00:00Z", "v1", "anna", customer_id="c1"),
        click("k2", "2026-03-01T11:59:50Z", "v1", "bob", customer_id="c1"),
        order("o1", "2026-03-01T12:00:00Z", "O1", "c1", "50.00"),
    ]

    moderate, relaxed = Run(events), Run(events, ClickPolicy.RELAXED)

    assert moderate.linear("O1") == {"k1": Decimal("50.00")}
    assert relaxed.linear("O1") == {"k1": Decimal("25.00"), "k2": Decimal("25.00")}
    flags = {row.touchpoint_event_id: row.touchpoint_flags for row in relaxed.credit_rows("O1")}
    assert flags["k2"] == ("too_fast_to_order",)


def test_a_burst_that_arrives_late_restates_the_order_its_click_was_credited_to() -> None:
    start = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    shopper = [
        shoppers_click_from_the_farm_address(),
        order("o1", "2026-03-01T12:00:00Z", "O1", "c1", "80.00"),
    ]
    late = Run([*shopper, *farm(start, 10)])

    assert late.linear("O1") == {"-": Decimal("80.00")}
    assert late.classification("k-bob") == ("invalid", ("click_burst",))
    versions = sorted(row.version for row in late.credit_rows("O1") if row.model == "linear")
    assert versions == [2]  # credited to k-bob first, then restated


def test_the_relaxed_policy_credits_everything_and_only_flags() -> None:
    start = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    events = [
        *farm(start, 10),
        shoppers_click_from_the_farm_address(),
        order("o1", "2026-03-01T12:00:00Z", "O1", "c1", "80.00"),
    ]

    run = Run(events, ClickPolicy.RELAXED)

    [row] = [row for row in run.credit_rows("O1") if row.model == "linear"]
    assert (row.touchpoint_event_id, row.touchpoint_flags) == ("k-bob", ("click_burst",))


def test_without_a_pii_key_only_the_clicks_own_reasons_apply() -> None:
    start = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    pipeline = LocalPipeline(CATALOG, Rules())
    pipeline.feed_all(
        [*farm(start, 20), click("bot", "2026-03-01T10:30:00Z", "v9", "bob", user_agent=GOOGLEBOT)]
    )

    assert pipeline.traffic == {}
    assert len(pipeline.visitors) == 21


def test_an_erasure_leaves_no_visitor_or_customer_id_in_the_traffic_stage() -> None:
    events = [
        click("k1", "2026-03-01T10:00:00Z", "phone-1", "anna", customer_id="alice"),
        click("k2", "2026-03-01T10:05:00Z", "laptop-1", "anna", ip="192.0.2.1"),
        event("identify", "i1", "2026-03-01T10:06:00Z", visitor_id="laptop-1", customer_id="alice"),
        order("o1", "2026-03-01T12:00:00Z", "O1", "alice", "40.00"),
    ]
    run = Run(events)

    run.pipeline.erase("alice", "erased-1", ("phone-1", "laptop-1"))

    held = [
        click.touchpoint
        for traffic in run.pipeline.traffic.values()
        for click in traffic.clicks.values()
    ]
    assert sorted(tp.event_id for tp in held) == ["k1", "k2"]
    assert {(tp.visitor_id, tp.customer_id) for tp in held} == {("", "")}
    journey = run.pipeline.journeys["erased-1"]
    assert {stored.touchpoint.ip_hash for stored in journey.clicks.values()} == {""}


def _storefront_with_bots(seed: int) -> tuple[Storefront, list[Event]]:
    storefront = Storefront(
        datetime(2026, 6, 1, tzinfo=UTC), seed=seed, influencers_count=6, sparse_share=0.3
    )
    raw = storefront.events(40, spread=timedelta(days=5))
    raw += storefront.fraud_events(storefront.start + timedelta(days=2))
    parsed = [validate_event(json.loads(json.dumps(item), parse_float=Decimal)) for item in raw]
    return storefront, parsed


def _outcome(run: LocalPipeline, rows: list[Row]) -> tuple[set[Any], dict[str, Any]]:
    credits = {
        (r.order_id, r.model, r.touchpoint_event_id, r.revenue_credit, r.touchpoint_flags)
        for r in run.final_credits()
    }
    classified: dict[str, ClickClassificationRow] = {}
    for row in rows:
        if isinstance(row, ClickClassificationRow):
            known = classified.get(row.event_id)
            if known is None or row.version >= known.version:
                classified[row.event_id] = row
    return credits, {event_id: (row.status, row.reasons) for event_id, row in classified.items()}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    arrival_seed=st.integers(),
    policy=st.sampled_from(list(ClickPolicy)),
)
def test_classification_and_credits_do_not_depend_on_arrival_order(
    seed: int, arrival_seed: int, policy: ClickPolicy
) -> None:
    storefront, events = _storefront_with_bots(seed)
    rules = Rules(click_policy=policy)
    in_order_rows: list[Row] = []
    in_order = LocalPipeline(
        storefront.static_catalog(), rules, on_rows=in_order_rows.extend, pii_key=PII_KEY
    )
    in_order.feed_all(events)
    rng = random.Random(arrival_seed)
    redelivered = events + rng.sample(events, len(events) // 10)
    permuted_rows: list[Row] = []
    permuted = LocalPipeline(
        storefront.static_catalog(), rules, on_rows=permuted_rows.extend, pii_key=PII_KEY
    )
    permuted.feed_all(arrival_within_lateness(redelivered, rules.allowed_lateness, rng))

    assert _outcome(permuted, permuted_rows) == _outcome(in_order, in_order_rows)
    statuses = {status for status, _ in _outcome(in_order, in_order_rows)[1].values()}
    assert statuses == {"valid", "suspicious", "invalid"}, "the bots make every status appear"


@pytest.mark.parametrize("policy", list(ClickPolicy))
def test_every_order_is_credited_in_full_under_every_policy(policy: ClickPolicy) -> None:
    storefront, events = _storefront_with_bots(3)
    run = LocalPipeline(storefront.static_catalog(), Rules(click_policy=policy), pii_key=PII_KEY)
    run.feed_all(events)

    per_order_model: dict[tuple[str, str], Decimal] = {}
    for row in run.final_credits():
        key = (row.order_id, row.model)
        per_order_model[key] = per_order_model.get(key, Decimal(0)) + row.credit
    assert set(per_order_model.values()) == {Decimal(1)}


def test_a_busy_address_keeps_a_bounded_state_per_influencer() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    clicks = [
        click(
            f"b{n}",
            (start + timedelta(minutes=3 * n)).isoformat(),
            f"bv{n}",
            "bob",
            ip="192.0.2.8",
            user_agent=f"Browser/{n}",
        )
        for n in range(MAX_CLICKS_KEPT + 200)
    ]
    clicks.append(click("a0", start.isoformat(), "av0", "anna", ip="192.0.2.8"))

    run = Run(clicks)

    kept = {key: len(traffic.clicks) for key, traffic in run.pipeline.traffic.items()}
    assert sorted(kept.values()) == [1, MAX_CLICKS_KEPT]  # one key per influencer
    assert run.classification("b5") == ("valid", ())  # 3 minutes apart, each its own browser


def test_clicks_stored_before_classification_decode_as_valid_and_unscreened() -> None:
    """A changelog written before this version carries none of the new touchpoint keys."""
    wire = {
        "e": "k1",
        "t": "2026-03-01T10:00:00+00:00",
        "i": "anna",
        "c": "spring",
        "p": "instagram",
        "r": "micro",
        "v": "v1",
        "u": "",
        "k": "",
    }

    touchpoint = Touchpoint.from_wire(wire)

    assert (touchpoint.flags, touchpoint.ip_hash, touchpoint.requires_click) == ((), "", False)
    assert touchpoint.to_wire() == wire  # and a valid click is written back as small as before
