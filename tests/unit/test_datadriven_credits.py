"""`markov` and `shapley` credit rows and journey paths from stored rows: hand-computed figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from attribution.datadriven_credits import (
    MAX_WEIGHTS_VERSION,
    NO_WEIGHTS,
    UncreditedClick,
    Weights,
    closed_paths,
    converting_path,
    credit_version,
    data_driven_rows,
    path_id,
    same_credits,
    weights_moved,
)
from attribution.rows import CreditRow

ORDER_AT = datetime(2026, 8, 14, 12, tzinfo=UTC)
# Worked example of docs/models.md.
WEIGHTS = Weights(
    1,
    {
        "markov": {
            "anna": Decimal("0.285714285714"),
            "ben": Decimal("0.571428571429"),
            "cleo": Decimal("0.142857142857"),
        },
        "shapley": {
            "anna": Decimal("0.333333333333333333"),
            "ben": Decimal("0.5"),
            "cleo": Decimal("0.166666666666666667"),
        },
    },
)


def linear_row(
    event_id: str, influencer: str, position: int, touchpoints: int, revenue: str, version: int
) -> CreditRow:
    return CreditRow(
        "o5",
        "linear",
        event_id,
        "click",
        ORDER_AT - timedelta(days=touchpoints - position + 1),
        position,
        touchpoints,
        influencer,
        "summer",
        "instagram",
        "micro",
        Decimal(1) / touchpoints,
        Decimal(revenue),
        "JPY",
        ORDER_AT,
        "u-v7",
        version,
        False,
        "code_as_last_touch",
        "EUR",
        Decimal(revenue) / 100,
        Decimal("0.01"),
        date(2026, 8, 14),
        ("suspicious_burst",) if influencer == "anna" else (),
    )


# cleo, anna, ben, ben: 9000 yen (an order in a currency without minor unit), 90.00 EUR.
ORDER = [
    linear_row("k11", "cleo", 1, 4, "2250", 3),
    linear_row("k12", "anna", 2, 4, "2250", 3),
    linear_row("k13", "ben", 3, 4, "2250", 3),
    linear_row("k14", "ben", 4, 4, "2250", 3),
]


def split(rows: Sequence[CreditRow], model: str) -> list[tuple[str, Decimal, Decimal, bool]]:
    return [
        (row.touchpoint_event_id, row.revenue_credit, row.reporting_revenue_credit, row.is_deleted)
        for row in rows
        if row.model == model
    ]


def test_an_order_is_split_by_each_model_s_weights_to_the_minor_unit() -> None:
    rows = data_driven_rows(ORDER, WEIGHTS, {})
    # 9000 yen x 1/7, 2/7, 2/7, 2/7 = 1285.7, 2571.4, 2571.4, 2571.4: the floors leave 2 yen,
    # which go by largest remainder to cleo and the first ben (his share, 0.2857142857145, is a
    # hair above anna's). 90.00 EUR the same way: 12.857.., 25.714.. x 3, 2 cents left.
    assert split(rows, "markov") == [
        ("k11", Decimal(1286), Decimal("12.86"), False),
        ("k12", Decimal(2571), Decimal("25.71"), False),
        ("k13", Decimal(2572), Decimal("25.72"), False),
        ("k14", Decimal(2571), Decimal("25.71"), False),
    ]
    assert split(rows, "shapley") == [
        ("k11", Decimal(1500), Decimal("15.00"), False),
        ("k12", Decimal(3000), Decimal("30.00"), False),
        ("k13", Decimal(2250), Decimal("22.50"), False),
        ("k14", Decimal(2250), Decimal("22.50"), False),
    ]
    for model in ("markov", "shapley"):
        model_rows = [row for row in rows if row.model == model]
        assert sum(row.credit for row in model_rows) == 1
        assert sum(row.revenue_credit for row in model_rows) == 9000


def test_rows_keep_the_touchpoint_and_carry_both_versions() -> None:
    [first, *_] = data_driven_rows(ORDER, WEIGHTS, {})
    assert first.weights_version == 1
    # Order version 3 in the high bits, weights version 1 in the low ones.
    assert first.version == 3 * 2**20 + 1
    assert first.to_wire()["weights_version"] == 1
    assert (first.touchpoint_at, first.position, first.touchpoints, first.code_policy) == (
        ORDER[0].touchpoint_at,
        1,
        4,
        "code_as_last_touch",
    )
    anna = data_driven_rows(ORDER, WEIGHTS, {})[1]
    assert anna.touchpoint_flags == ("suspicious_burst",)


def test_row_versions_grow_with_the_order_version_first_then_the_weights_version() -> None:
    assert credit_version(2, MAX_WEIGHTS_VERSION) < credit_version(3, 0) < credit_version(3, 1)
    with pytest.raises(ValueError):
        credit_version(1, MAX_WEIGHTS_VERSION + 1)


def test_without_weights_an_order_is_split_as_linear() -> None:
    rows = data_driven_rows(ORDER, NO_WEIGHTS, {})
    assert [(row.model, row.revenue_credit, row.weights_version) for row in rows] == [
        (model, Decimal(2250), 0) for model in ("markov", "shapley") for _ in ORDER
    ]
    assert rows[0].version == 3 * 2**20


def test_touchpoints_no_longer_credited_are_retracted() -> None:
    # Restated: only anna's and a new influencer's clicks; dora has no weight and earns nothing.
    restated = [
        linear_row("k12", "anna", 1, 2, "4500", 4),
        linear_row("k15", "dora", 2, 2, "4500", 4),
    ]
    before = {"markov": ["k11", "k12", "k13", "k14"], "shapley": ["k11", "k12", "k13", "k14"]}
    rows = data_driven_rows(restated, WEIGHTS, before)
    assert split(rows, "markov") == [
        ("k12", Decimal(9000), Decimal("90.00"), False),
        ("k11", Decimal(0), Decimal(0), True),
        ("k13", Decimal(0), Decimal(0), True),
        ("k14", Decimal(0), Decimal(0), True),
    ]
    assert {row.version for row in rows} == {4 * 2**20 + 1}


def test_an_order_without_influencer_is_credited_whole_to_nobody() -> None:
    bare = replace(
        ORDER[0],
        touchpoint_event_id="",
        influencer_id="",
        position=0,
        touchpoints=0,
        credit=Decimal(1),
    )
    bare = replace(bare, revenue_credit=Decimal(9000), reporting_revenue_credit=Decimal("90.00"))
    rows = data_driven_rows([bare], WEIGHTS, {})
    assert [(row.model, row.credit, row.revenue_credit) for row in rows] == [
        ("markov", Decimal(1), Decimal(9000)),
        ("shapley", Decimal(1), Decimal(9000)),
    ]
    assert converting_path([bare]).influencers == ()


def test_a_converting_path_is_the_order_s_touchpoints_in_order() -> None:
    path = converting_path(ORDER)
    assert (path.identity, path.converted, path.order_id, path.version) == ("u-v7", True, "o5", 3)
    assert path.influencers == ("cleo", "anna", "ben", "ben")
    assert path.ended_at == ORDER_AT
    assert path.path_id == converting_path(list(reversed(ORDER))).path_id


def uncredited(event_id: str, identity: str, day: int, influencer: str) -> UncreditedClick:
    at = datetime(2026, 6, 1, tzinfo=UTC) + timedelta(days=day)
    return UncreditedClick(event_id, identity, at, influencer, "summer", "instagram")


def test_a_journey_without_order_ends_when_no_click_follows_within_the_lookback() -> None:
    clicks = [
        uncredited("a1", "u1", 0, "anna"),
        uncredited("a2", "u1", 20, "ben"),  # within 30 days of a1: the same journey
        uncredited("a3", "u1", 45, "cleo"),  # 25 days after a2: continues it
        uncredited("a4", "u1", 80, "anna"),  # 35 days after a3: a new journey
        uncredited("b1", "u2", 5, "ben"),
    ]
    start = datetime(2026, 5, 1, tzinfo=UTC)
    paths = closed_paths(clicks, timedelta(days=30), start, start + timedelta(days=200), 50)
    # u1's first journey ends at a3 and holds the clicks within 30 days before it: a2, a3.
    assert [(path.identity, path.influencers, path.ended_at.day) for path in paths] == [
        ("u1", ("ben", "cleo"), 16),
        ("u1", ("anna",), 20),
        ("u2", ("ben",), 6),
    ]
    # Ranges split anywhere write each path once, with the same id.
    middle = datetime(2026, 7, 18, tzinfo=UTC)
    halves = closed_paths(clicks, timedelta(days=30), start, middle, 50) + closed_paths(
        clicks, timedelta(days=30), middle, start + timedelta(days=200), 50
    )
    assert sorted(path.path_id for path in halves) == sorted(path.path_id for path in paths)


def test_a_path_keeps_the_last_touchpoints_only() -> None:
    clicks = [uncredited(f"c{day}", "u1", day, "anna") for day in range(5)]
    start = datetime(2026, 5, 1, tzinfo=UTC)
    [path] = closed_paths(clicks, timedelta(days=30), start, start + timedelta(days=90), 3)
    assert [moment.day for moment in path.touched_at] == [3, 4, 5]


def test_a_journey_without_order_is_named_by_its_last_click_alone() -> None:
    # The identity is renamed by an erasure; an id made of it would lead back to the customer.
    [path] = closed_paths(
        [uncredited("a1", "u1", 0, "anna"), uncredited("a2", "u1", 1, "ben")],
        timedelta(days=30),
        datetime(2026, 5, 1, tzinfo=UTC),
        datetime(2026, 9, 1, tzinfo=UTC),
        50,
    )
    assert path.path_id == path_id("journey", "a2")


def test_weights_make_a_new_version_only_when_one_moves_by_more_than_the_threshold() -> None:
    threshold = Decimal("0.001")
    markov = dict(WEIGHTS.by_model["markov"])
    shapley = dict(WEIGHTS.by_model["shapley"])
    assert not weights_moved(WEIGHTS, {"markov": markov, "shapley": shapley}, threshold)
    # anna 0.285714285714 -> 0.2867: 0.000985.. is not more than 0.001; 0.2868 is.
    nudged = {"markov": {**markov, "anna": Decimal("0.2867")}, "shapley": shapley}
    assert not weights_moved(WEIGHTS, nudged, threshold)
    moved = {"markov": {**markov, "anna": Decimal("0.2868")}, "shapley": shapley}
    assert weights_moved(WEIGHTS, moved, threshold)
    # A model losing all its weights moves them to 0; the first weights move them from 0.
    assert weights_moved(WEIGHTS, {"markov": markov}, threshold)
    assert weights_moved(NO_WEIGHTS, {"markov": markov}, threshold)
    assert not weights_moved(NO_WEIGHTS, {}, threshold)


def test_a_split_is_the_same_when_credits_and_amounts_are_to_the_stored_places() -> None:
    stored = data_driven_rows(ORDER, WEIGHTS, {})
    # Stored to 18 places: ben's 0.2857142857145 credit and the rest read back as they are.
    assert same_credits(stored, data_driven_rows(ORDER, replace(WEIGHTS, version=2), {}))
    # Shapley ben 0.5001 instead of 0.5: every share moves (the sum is 1.0001), though the
    # largest remainders give back the same yen (1499.85, 2999.7, 2249.77.. twice: 4 yen left).
    shifted = Weights(
        2,
        {**WEIGHTS.by_model, "shapley": {**WEIGHTS.by_model["shapley"], "ben": Decimal("0.5001")}},
    )
    assert not same_credits(stored, data_driven_rows(ORDER, shifted, {}))
    # A retraction credits nothing: it is no difference.
    retracted = data_driven_rows(ORDER, WEIGHTS, {"markov": ["k10"]})
    assert any(row.is_deleted for row in retracted)
    assert same_credits(stored, retracted)
