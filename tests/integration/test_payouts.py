"""Payout statements on the embedded ClickHouse engine: a month closes, a refund and a late click
after its lock date become adjustments of the next month, the closed month never changes, and
`attribution payouts` writes the statements as CSV. Figures computed by hand in the comments.

Events run through the real attribution core; no Kafka is needed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from attribution.payouts import Period, Statement
from attribution.replay import LocalPipeline
from attribution.rows import Row
from attribution.rules import Rules
from schemas.catalog import CatalogFiles
from schemas.events import decode_event
from sinks.catalog_store import catalog_rows, exchange_rates, to_static_catalog
from sinks.clickhouse import ClickHouseWriter, connect
from sinks.migrations import migrate
from sinks.payouts import PayoutReport, run_payouts
from streams.cli import main
from tests.integration import helpers

pytestmark = pytest.mark.integration

OCTOBER, NOVEMBER, DECEMBER = Period(2026, 10), Period(2026, 11), Period(2026, 12)
LOCK_DAYS = 30  # October locks on 2026-12-01, November on 2026-12-31

CATALOG = CatalogFiles.model_validate(
    {
        "influencers": [
            {"influencer_id": "anna", "handle": "a", "platform": "instagram", "followers": 45000},
            {"influencer_id": "bob", "handle": "bob", "platform": "tiktok", "followers": 850000},
        ],
        "campaigns": [
            {
                "campaign_id": "autumn",
                "name": "Autumn drop",
                "category": "fashion",
                "starts_at": "2026-10-05T00:00:00Z",
                "ends_at": "2026-11-20T23:59:59Z",
                "budget": "10000",
                "currency": "USD",
            }
        ],
        "contracts": [
            # 2 posts at 400, a 250 retainer, 10% of last-click revenue, 500 above 2 conversions.
            {
                "influencer_id": "anna",
                "campaign_id": "autumn",
                "fee_per_post": "400",
                "posts": 2,
                "retainer": "250",
                "commission_rate": "0.10",
                "bonus_amount": "500",
                "bonus_metric": "conversions",
                "bonus_threshold": "2",
            },
            {"influencer_id": "bob", "campaign_id": "autumn", "commission_rate": "0.05"},
        ],
    }
)


def click(event_id: str, at: str, visitor: str, influencer: str) -> dict[str, Any]:
    return {
        "type": "click",
        "event_id": event_id,
        "occurred_at": at,
        "visitor_id": visitor,
        "url": f"https://shop.example/?utm_campaign=autumn&utm_content={influencer}",
    }


def order(event_id: str, at: str, visitor: str, total: str) -> dict[str, Any]:
    return helpers.order(event_id, at, visitor, total, currency="USD")


# October: anna's o1 (123.45), bob's o2 (100.00). November: anna's o3 (80.00) and o4 (50.00).
BEFORE_CLOSE = [
    click("k1", "2026-10-10T09:00:00Z", "v1", "anna"),
    order("o1", "2026-10-10T12:00:00Z", "v1", "123.45"),
    click("k2", "2026-10-20T09:00:00Z", "v2", "bob"),
    order("o2", "2026-10-21T12:00:00Z", "v2", "100.00"),
    click("k3", "2026-11-05T09:00:00Z", "v3", "anna"),
    order("o3", "2026-11-06T12:00:00Z", "v3", "80.00"),
    click("k4", "2026-11-07T09:00:00Z", "v4", "anna"),
    order("o4", "2026-11-08T12:00:00Z", "v4", "50.00"),
]
# After October closed: 20.00 of o1 refunded, and anna's click on o2's device that came after
# bob's arrives late; o2 becomes hers under last click.
AFTER_CLOSE = [
    {
        "type": "refund",
        "event_id": "r1",
        "occurred_at": "2026-12-03T10:00:00Z",
        "order_id": "o1",
        "currency": "USD",
        "amount": "20.00",
    },
    click("k5", "2026-10-20T18:00:00Z", "v2", "anna"),
]


@dataclass(frozen=True)
class Story:
    october_before_lock: PayoutReport
    october_at_lock: PayoutReport
    november_after_restatement: PayoutReport
    october_after_restatement: PayoutReport
    november_after_its_lock: PayoutReport
    csv_rows: list[dict[str, str]]
    stored_rows_after_cli: int
    stored_rows_after_rerun: int


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def stored_rows(client: Client) -> int:
    [[count]] = client.query("SELECT count() FROM payout_statements FINAL").result_rows
    return int(count)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    directory = tmp_path_factory.mktemp("payouts")
    dsn = f"chdb://{directory / 'clickhouse'}"
    client = connect(dsn)
    try:
        migrate(client)
        writer = ClickHouseWriter(client)
        writer.insert_now(
            catalog_rows(
                CATALOG, 1, datetime(2026, 9, 1, tzinfo=UTC), exchange_rates(CATALOG, "USD")
            )
        )
        emitted: list[Row] = []
        pipeline = LocalPipeline(to_static_catalog(CATALOG), Rules(), on_rows=emitted.extend)

        def deliver(events: list[dict[str, Any]]) -> None:
            for event in events:
                pipeline.feed(decode_event(json.dumps(event).encode()))
            writer.insert_now([row.to_wire() for row in emitted])
            emitted.clear()

        deliver(BEFORE_CLOSE)
        october_before_lock = run_payouts(client, OCTOBER, at("2026-11-30T23:59:59Z"), LOCK_DAYS)
        october_at_lock = run_payouts(client, OCTOBER, at("2026-12-01T00:00:00Z"), LOCK_DAYS)
        deliver(AFTER_CLOSE)
        november = run_payouts(client, NOVEMBER, at("2026-12-15T00:00:00Z"), LOCK_DAYS)
        october = run_payouts(client, OCTOBER, at("2026-12-15T00:00:00Z"), LOCK_DAYS)

        out = directory / "statement.csv"
        with pytest.MonkeyPatch.context() as env:
            env.setenv("ATTRIBUTION_CLICKHOUSE_DSN", dsn)
            env.setenv("ATTRIBUTION_PAYOUT_LOCK_DAYS", str(LOCK_DAYS))
            cli = ["payouts", "--period", "2026-11", "--as-of", "2026-12-31T01:00:00+01:00"]
            assert main([*cli, "--out", str(out)]) == 0
        with out.open(newline="", encoding="utf-8") as handle:
            csv_rows = list(csv.DictReader(handle))
        after_cli = stored_rows(client)
        november_closed = run_payouts(client, NOVEMBER, at("2027-02-01T00:00:00Z"), LOCK_DAYS)
        yield Story(
            october_before_lock,
            october_at_lock,
            november,
            october,
            november_closed,
            csv_rows,
            after_cli,
            stored_rows(client),
        )
    finally:
        client.close()


def lines(statement: Statement) -> list[tuple[str, str, Decimal]]:
    return [(line.campaign_id, line.kind, line.amount) for line in statement.lines]


def by_influencer(report: PayoutReport) -> dict[str, Statement]:
    return {statement.influencer_id: statement for statement in report.statements}


def test_a_month_is_open_until_its_lock_date_and_closed_from_it(story: Story) -> None:
    assert not story.october_before_lock.closed
    assert story.october_before_lock.closed_now == []
    assert story.october_at_lock.closed
    # October is the first month anything is due in: nothing before it is closed.
    assert story.october_at_lock.closed_now == [OCTOBER]
    # The statements stored at close are the ones shown the second before.
    assert [(s.influencer_id, lines(s), s.total) for s in story.october_at_lock.statements] == [
        (s.influencer_id, lines(s), s.total) for s in story.october_before_lock.statements
    ]


def test_the_closed_statement_pays_commission_fees_and_retainer(story: Story) -> None:
    statements = by_influencer(story.october_at_lock)
    # anna: 10% of 123.45 = 12.345, 2 x 400, 250: 1062.345 -> 1062.34 (half to even).
    assert lines(statements["anna"]) == [
        ("autumn", "commission", Decimal("12.34")),
        ("autumn", "post_fees", Decimal("800.00")),
        ("autumn", "retainer", Decimal("250.00")),
    ]
    assert statements["anna"].total == Decimal("1062.34")
    # bob: 5% of 100.00.
    assert lines(statements["bob"]) == [("autumn", "commission", Decimal("5.00"))]


def test_restatements_after_the_lock_date_leave_the_closed_month_unchanged(story: Story) -> None:
    assert story.october_after_restatement.closed
    assert story.october_after_restatement.statements == story.october_at_lock.statements


def test_restatements_after_the_lock_date_are_adjustments_of_the_next_month(story: Story) -> None:
    assert not story.november_after_restatement.closed
    statements = by_influencer(story.november_after_restatement)
    # October is now worth 10% of (103.45 + 100.00) + 800 + 250 = 1070.345 to anna, who was paid
    # 1062.34: +8.005. November: 10% of (80 + 50) = 13.00, bonus 500 (4 conversions > 2).
    # 521.005 -> 521.00 (half to even), which the lines rounded down make.
    assert lines(statements["anna"]) == [
        ("autumn", "commission", Decimal("13.00")),
        ("autumn", "bonus", Decimal("500.00")),
        ("", "adjustment", Decimal("8.00")),
    ]
    assert statements["anna"].total == Decimal("521.00")
    # bob's October order is anna's now: he gives back the 5.00 he was paid.
    assert lines(statements["bob"]) == [("", "adjustment", Decimal("-5.00"))]


def test_cli_closes_the_month_and_writes_its_statements_as_csv(story: Story) -> None:
    # 2026-12-31T01:00+01:00 is November's lock date (2026-12-31T00:00Z): the run closes it.
    assert story.csv_rows == [
        {
            "period": "2026-11",
            "status": "closed",
            "influencer_id": influencer,
            "currency": "USD",
            "campaign_id": campaign,
            "kind": kind,
            "commission_model": model,
            "amount": amount,
        }
        for influencer, campaign, kind, model, amount in (
            ("anna", "autumn", "commission", "last_click", "13.00"),
            ("anna", "autumn", "bonus", "last_click", "500.00"),
            ("anna", "", "adjustment", "", "8.00"),
            ("anna", "", "total", "", "521.00"),
            ("bob", "", "adjustment", "", "-5.00"),
            ("bob", "", "total", "", "-5.00"),
        )
    ]


def test_a_closed_month_is_written_once(story: Story) -> None:
    # October: 3 + 1 lines, November: 3 + 1. A later run closes December, where only anna's
    # half cent is left (1583.345 owed, 1583.34 paid), which rounds to nothing: no statement.
    assert story.stored_rows_after_cli == story.stored_rows_after_rerun == 8
    assert story.november_after_its_lock.closed_now == [DECEMBER]
    assert [
        (s.influencer_id, lines(s), s.total) for s in story.november_after_its_lock.statements
    ] == [(s.influencer_id, lines(s), s.total) for s in story.november_after_restatement.statements]
