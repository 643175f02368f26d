"""A campaign selling in EUR and USD has one ROAS: the KPI views, spend and payouts are in the
reporting currency, on the embedded ClickHouse engine, against figures computed by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from attribution.fx import ExchangeRates
from attribution.payouts import Period
from attribution.replay import LocalPipeline
from attribution.rows import Row
from attribution.rules import Rules
from schemas.catalog import CampaignRow, CatalogFiles, ContractRow, InfluencerRow
from schemas.events import decode_event
from schemas.fx_rates import parse_ecb_rates
from sinks.catalog_store import catalog_rows, to_static_catalog
from sinks.clickhouse import ClickHouseWriter, connect
from sinks.migrations import migrate
from sinks.payouts import run_payouts

pytestmark = pytest.mark.integration

RATES = parse_ecb_rates("Date,USD,GBP\n2026-10-23,1.1172,0.8338\n2026-10-22,1.1150,0.8300\n")
CATALOG = CatalogFiles(
    influencers=[
        InfluencerRow(influencer_id="anna", handle="anna", platform="instagram", followers=45_000)
    ],
    campaigns=[
        CampaignRow.model_validate(
            {
                "campaign_id": campaign_id,
                "name": campaign_id,
                "category": "fashion",
                "starts_at": starts_at,
                "ends_at": "2027-01-31T00:00:00Z",
                "budget": "5000",
                "currency": currency,
            }
        )
        for campaign_id, starts_at, currency in (
            ("euro", "2026-10-22T00:00:00Z", "EUR"),
            ("euro-later", "2026-12-01T00:00:00Z", "EUR"),
            ("dollar-later", "2026-12-01T00:00:00Z", "USD"),
        )
    ],
    contracts=[
        ContractRow.model_validate(
            {
                "influencer_id": "anna",
                "campaign_id": "euro",
                "fee_per_post": "100",
                "posts": 2,
                "commission_rate": "0.10",
            }
        )
    ],
)


def events() -> list[dict[str, Any]]:
    """Anna's click, then an order in EUR, one in USD, and one in GBP on a day not published."""
    click = {
        "type": "click",
        "event_id": "k1",
        "occurred_at": "2026-10-22T08:00:00Z",
        "visitor_id": "v1",
        "customer_id": "u1",
        "url": "https://shop.example/",
        "influencer_id": "anna",
        "campaign_id": "euro",
    }
    orders = [
        {
            "type": "order",
            "event_id": order_id,
            "occurred_at": when,
            "order_id": order_id,
            "customer_id": "u1",
            "currency": currency,
            "total": total,
        }
        for order_id, when, currency, total in (
            ("o-eur", "2026-10-22T12:00:00Z", "EUR", "100.00"),
            ("o-usd", "2026-10-23T12:00:00Z", "USD", "50.00"),
            ("o-gbp", "2026-10-24T12:00:00Z", "GBP", "40.00"),
        )
    ]
    return [click, *orders]


@pytest.fixture(scope="module")
def clickhouse(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Client, ClickHouseWriter]]:
    client = connect(f"chdb://{tmp_path_factory.mktemp('currencies') / 'clickhouse'}")
    migrate(client)
    writer = ClickHouseWriter(client)
    rates = ExchangeRates("USD", RATES)
    catalog = replace(to_static_catalog(CATALOG), exchange_rates=rates)
    emitted: list[Row] = []
    pipeline = LocalPipeline(catalog, Rules(), on_rows=emitted.extend)
    for event in events():
        pipeline.feed(decode_event(json.dumps(event).encode()))
    writer.insert_now([row.to_wire() for row in emitted])
    writer.insert_now(catalog_rows(CATALOG, 1, datetime(2026, 10, 1, tzinfo=UTC), rates))
    yield client, writer
    client.close()


def test_one_roas_for_a_campaign_selling_in_two_currencies(
    clickhouse: tuple[Client, ClickHouseWriter],
) -> None:
    _, writer = clickhouse
    columns, rows = writer.query(
        "SELECT * FROM campaign_kpis WHERE campaign_id = 'euro' AND model = 'last_click'"
    )
    [euro] = [dict(zip(columns, row, strict=True)) for row in rows]

    # 100.00 EUR x 1.1150 (22 Oct) = 111.50 USD, plus 50.00 USD; GBP's day is not published.
    assert euro["credited_conversions"] == 2
    assert euro["credited_revenue"] == Decimal("161.50")
    # 2 posts x 100 EUR at the campaign's start (1.1150) = 223.00 + 10% of 161.50 = 16.15
    assert euro["spend"] == Decimal("239.15")
    assert euro["roas"] == Decimal("0.6753")  # 161.50 / 239.15, truncated to 4 places


def test_an_order_without_its_days_rate_is_listed_and_kept_out_of_the_kpis(
    clickhouse: tuple[Client, ClickHouseWriter],
) -> None:
    _, writer = clickhouse
    _, waiting = writer.query("SELECT order_id, currency, total FROM orders_missing_fx_rate")

    assert [tuple(row) for row in waiting] == [("o-gbp", "GBP", Decimal("40.00"))]
    _, credited = writer.query(
        "SELECT currency, order_currency, sum(revenue_credit) FROM credit_facts "
        "WHERE model = 'linear' GROUP BY currency, order_currency ORDER BY order_currency"
    )
    assert [tuple(row) for row in credited] == [
        ("USD", "EUR", Decimal("111.50")),
        ("USD", "USD", Decimal("50.00")),
    ]


def test_payouts_are_in_the_reporting_currency_with_fees_at_the_campaigns_start_rate(
    clickhouse: tuple[Client, ClickHouseWriter],
) -> None:
    client, _ = clickhouse
    report = run_payouts(client, Period.parse("2026-10"), datetime(2026, 11, 1, tzinfo=UTC), 30)

    [statement] = report.statements
    assert (statement.influencer_id, statement.currency) == ("anna", "USD")
    assert {line.kind: line.amount for line in statement.lines} == {
        "commission": Decimal("16.15"),
        "post_fees": Decimal("223.00"),
    }


def test_a_campaign_converts_at_its_start_rate_once_it_is_published(
    clickhouse: tuple[Client, ClickHouseWriter],
) -> None:
    _, writer = clickhouse

    _, rows = writer.query(
        "SELECT campaign_id, toString(rate), toString(published_on) FROM campaign_fx "
        "ORDER BY campaign_id"
    )

    # euro-later starts after the newest publication (23 October): no rate yet, no spend.
    assert [tuple(row) for row in rows] == [
        ("dollar-later", "1", "2026-12-01"),
        ("euro", "1.115", "2026-10-22"),
    ]
