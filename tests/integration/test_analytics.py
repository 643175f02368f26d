"""The KPI views on the embedded ClickHouse engine, against numbers computed by hand.

The scenario runs through the real attribution core; its rows are inserted twice (a full
re-delivery) and include a restatement (a refund), so exact sums prove FINAL-state queries.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from attribution.replay import LocalPipeline
from attribution.rows import Row
from attribution.rules import Rules
from schemas.catalog import read_catalog_dir
from schemas.events import decode_event
from sinks.catalog_store import catalog_rows, exchange_rates, to_static_catalog
from sinks.clickhouse import ClickHouseWriter, connect
from sinks.datadriven import DataDrivenSink
from sinks.migrations import MIGRATIONS, migrate
from tests.integration.helpers import EXAMPLES

pytestmark = pytest.mark.integration

ANNA = "https://shop.example/dress?utm_source=instagram&utm_campaign=spring&utm_content=anna"
DOCS = Path(__file__).parents[2] / "docs" / "analytics.md"


def scenario() -> list[dict[str, Any]]:
    """Four shoppers click anna's spring link; two buy, one of them twice, one refunds part."""
    events: list[dict[str, Any]] = []
    for n in range(1, 5):
        events.append(
            {
                "type": "click",
                "event_id": f"k{n}",
                "occurred_at": f"2026-04-0{n}T09:00:00Z",
                "visitor_id": f"v{n}",
                "url": ANNA,
            }
        )
    dress = {"sku": "dress-1", "category": "fashion", "quantity": 2, "unit_price": "40.00"}
    belt = {"sku": "belt-1", "category": "accessories", "quantity": 1, "unit_price": "20.00"}
    for event_id, day, customer, visitor, total, items in (
        ("o1", "01", "u1", "v1", "100.00", [dress, belt]),
        ("o2", "02", "u2", "v2", "50.00", []),
        ("o3", "05", "u1", "v1", "30.00", []),
    ):
        events.append(
            {
                "type": "order",
                "event_id": event_id,
                "occurred_at": f"2026-04-{day}T12:00:00Z",
                "order_id": event_id,
                "customer_id": customer,
                "visitor_id": visitor,
                "currency": "USD",
                "total": total,
                "items": items,
            }
        )
    events.append(
        {
            "type": "refund",
            "event_id": "r2",
            "occurred_at": "2026-04-03T12:00:00Z",
            "order_id": "o2",
            "currency": "USD",
            "amount": "10.00",
        }
    )
    # One gadgets shopper clicks cara's link and buys a 20.00 cable: AOV far under electronics'.
    events.append(
        {
            "type": "click",
            "event_id": "k9",
            "occurred_at": "2026-04-06T09:00:00Z",
            "visitor_id": "v9",
            "url": "https://shop.example/cable?utm_campaign=gadgets&utm_content=cara",
        }
    )
    events.append(
        {
            "type": "order",
            "event_id": "o9",
            "occurred_at": "2026-04-06T10:00:00Z",
            "order_id": "o9",
            "customer_id": "u9",
            "visitor_id": "v9",
            "currency": "USD",
            "total": "20.00",
        }
    )
    events.append(
        {
            "type": "content_metrics",
            "event_id": "m1",
            "occurred_at": "2026-04-01T20:00:00Z",
            "influencer_id": "anna",
            "post_id": "p1",
            "platform": "instagram",
            "campaign_id": "spring",
            "impressions": 1000,
            "likes": 40,
            "comments": 10,
            "followers": 45000,
        }
    )
    return events


@pytest.fixture(scope="module")
def analytics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseWriter]:
    client = connect(f"chdb://{tmp_path_factory.mktemp('analytics') / 'clickhouse'}")
    assert migrate(client) == [migration.version for migration in MIGRATIONS]
    assert migrate(client) == []  # recorded: a restart applies nothing again
    writer = ClickHouseWriter(client)
    files = read_catalog_dir(EXAMPLES / "catalog")
    emitted: list[Row] = []
    pipeline = LocalPipeline(to_static_catalog(files), Rules(), on_rows=emitted.extend)
    for event in scenario():
        pipeline.feed(decode_event(json.dumps(event).encode()))
    wire = [row.to_wire() for row in emitted]
    for _ in range(2):  # the same rows delivered twice
        writer.insert_now(wire)
    writer.insert_now(
        catalog_rows(files, 1, datetime(2026, 3, 1, tzinfo=UTC), exchange_rates(files, "USD"))
    )
    # The worker that owns ClickHouse credits the stored orders under markov and shapley too.
    data_driven = DataDrivenSink(writer, Rules(), timedelta(days=90), timedelta(days=30))
    watermark = data_driven.watermark(datetime.now(UTC))
    assert watermark is not None
    asyncio.run(data_driven.credit_orders(watermark))
    yield writer


def one(writer: ClickHouseWriter, sql: str) -> dict[str, Any]:
    columns, rows = writer.query(sql)
    assert len(rows) == 1, rows
    return dict(zip(columns, rows[0], strict=True))


def test_campaign_kpis_equal_the_hand_computed_figures(analytics: ClickHouseWriter) -> None:
    spring = one(
        analytics,
        "SELECT * FROM campaign_kpis WHERE campaign_id = 'spring' AND model = 'last_click'",
    )
    # last click: o1 100.00, o2 50.00 - 10.00 refunded, o3 30.00 (u1 again): all anna's.
    assert spring["clicks"] == 4
    assert spring["impressions"] == 1000
    assert spring["credited_conversions"] == 3
    assert spring["conversion_rate"] == Decimal("75")  # 3 / 4 x 100
    assert spring["credited_revenue"] == Decimal("170.00")
    assert spring["aov"] == Decimal("56.6666")  # 170 / 3, 4 decimals, truncated
    assert spring["return_rate"] == Decimal("0.055555")  # 10 / 180
    assert spring["new_customers"] == 2  # o1 and o2 are first orders; o3 is u1's second
    # spend: anna 400 x 2 + 10% of 170 + 500 bonus (75% > 3%) = 1317; bob 2500; dev 150 x 3
    assert spring["spend"] == Decimal("4267.00")
    assert spring["roas"] == Decimal("0.0398")  # 170 / 4267
    assert spring["cac"] == Decimal("2133.5")  # 4267 / 2
    assert spring["margin"] == Decimal("0.30")
    assert spring["net_profit"] == Decimal("-4216.00")  # 170 x 0.30 - 4267
    assert spring["roi"] == Decimal("-0.9880")  # -4216 / 4267


def test_payouts_itemise_fees_commission_and_bonus(analytics: ClickHouseWriter) -> None:
    anna = one(analytics, "SELECT * FROM payouts WHERE influencer_id = 'anna'")
    assert (anna["post_fees"], anna["commissions"], anna["bonuses"], anna["payout"]) == (
        Decimal("800"),
        Decimal("17.00"),
        Decimal("500"),
        Decimal("1317.00"),
    )
    cara = one(analytics, "SELECT * FROM payouts WHERE influencer_id = 'cara'")
    assert (cara["retainers"], cara["bonuses"], cara["payout"]) == (
        Decimal("1000"),
        Decimal("0"),
        Decimal("10000"),
    )


def test_daily_kpis_ctr_engagement_and_customers(analytics: ClickHouseWriter) -> None:
    first_day = one(
        analytics,
        "SELECT * FROM kpi_daily WHERE day = '2026-04-01' AND model = 'last_click'"
        " AND influencer_id = 'anna'",
    )
    assert (first_day["tier"], first_day["platform"], first_day["category"]) == (
        "micro",
        "instagram",
        "fashion",
    )
    assert first_day["clicks"] == 1
    assert first_day["ctr"] == Decimal("0.1")  # 1 / 1000 x 100
    assert first_day["engagement_rate"] == Decimal("0.1111")  # (40 + 10) / 45000 x 100
    customers = one(analytics, "SELECT * FROM customer_kpis")
    # u1 (o1, o3), u2 (o2), u9 (o9): 4 orders, net 100 + 40 + 30 + 20 = 190
    assert customers["customers"] == 3
    assert customers["repeat_purchase_rate"] == Decimal("0.333333")  # 1 / 3
    assert customers["aov"] == Decimal("47.5")  # 190 / 4
    assert customers["purchase_frequency"] == Decimal("1.3333")  # 4 / 3
    assert customers["ltv"] == Decimal("21.1105")  # 47.5 x 1.3333 x 0.333333


def test_a_campaign_under_its_category_benchmark_is_flagged(analytics: ClickHouseWriter) -> None:
    _, rows = analytics.query(
        "SELECT campaign_id, conversion_rate, aov, conversion_rate_below, aov_below"
        " FROM campaign_benchmark_flags"
    )
    # gadgets: 1 click, 1 order of 20.00 -> conversion 100% (fine), AOV 20 < 150 (electronics).
    # spring: 75% and 56.67 sit inside fashion's 2-5% floor and 35-65 range: not flagged.
    assert rows == [["gadgets", Decimal("100"), Decimal("20"), 0, 1]]


def test_every_model_credits_the_same_net_revenue(analytics: ClickHouseWriter) -> None:
    _, rows = analytics.query(
        "SELECT model, sum(credited_revenue) FROM kpi_daily GROUP BY model ORDER BY model"
    )
    assert {model: revenue for model, revenue in rows} == dict.fromkeys(
        (
            "first_click",
            "last_click",
            "linear",
            "position_based",
            "time_decay",
            "markov",
            "shapley",
        ),
        Decimal("190.00"),  # 170.00 for anna's spring + 20.00 for cara's gadgets
    )


def test_order_lines_are_kept_once_each(analytics: ClickHouseWriter) -> None:
    _, rows = analytics.query(
        "SELECT line, sku, category, quantity, unit_price FROM order_items FINAL"
        " WHERE order_id = 'o1' ORDER BY line"
    )
    assert rows == [
        [1, "dress-1", "fashion", 2, Decimal("40.00")],
        [2, "belt-1", "accessories", 1, Decimal("20.00")],
    ]


def documented_queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


def test_docs_give_at_least_twelve_queries() -> None:
    assert len(documented_queries()) >= 12


@pytest.mark.parametrize("query", documented_queries())
def test_every_documented_query_runs(analytics: ClickHouseWriter, query: str) -> None:
    analytics.query(query)
