"""Payout statements in ClickHouse: the tables closed periods are stored in, the inputs read from
the final state, and a run of `attribution payouts` (attribution/payouts.py computes).

A period is recorded in `payout_periods` only after all its lines are in `payout_statements`, so
a run stopped half way leaves lines of a period that is not closed: the next run deletes them and
closes the period again. Two runs must not close at once (run one daily cron job).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from attribution.fx import LockedRate
from attribution.money import currency_quantum
from attribution.payouts import (
    Closing,
    Credited,
    Line,
    PayoutInputs,
    Period,
    Statement,
    StatementKey,
    close_due,
    open_statements,
)
from schemas.catalog import CampaignRow, ContractRow

# The commission base: revenue credited per influencer, campaign, model and period, read from
# these columns of `credit_facts` and nowhere else: the reporting currency and the amounts in it
# (orders still waiting for their exchange rate are not in `credit_facts` yet).
COMMISSION_REVENUE = "revenue_credit"
COMMISSION_CURRENCY = "currency"

PAYOUT_TABLES = (
    """
    CREATE TABLE IF NOT EXISTS payout_statements (
        period String,
        influencer_id String,
        currency LowCardinality(String),
        line UInt16,
        campaign_id String,
        kind LowCardinality(String),
        commission_model LowCardinality(String),
        exact_amount Decimal(38, 18),
        amount Decimal(38, 4)
    ) ENGINE = ReplacingMergeTree
    ORDER BY (period, influencer_id, currency, line)
    """,
    """
    CREATE TABLE IF NOT EXISTS payout_periods (
        period String,
        lock_date DateTime64(3, 'UTC'),
        as_of DateTime64(3, 'UTC'),
        statements UInt32,
        written_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree
    ORDER BY period
    """,
)

STATEMENT_COLUMNS = (
    "period",
    "influencer_id",
    "currency",
    "line",
    "campaign_id",
    "kind",
    "commission_model",
    "exact_amount",
    "amount",
)
CONTRACT_COLUMNS = (
    "influencer_id",
    "campaign_id",
    "fee_per_post",
    "posts",
    "retainer",
    "commission_rate",
    "bonus_amount",
    "bonus_metric",
    "bonus_threshold",
    "commission_model",
)
CAMPAIGN_COLUMNS = (
    "campaign_id",
    "name",
    "category",
    "starts_at",
    "ends_at",
    "budget",
    "currency",
)


def _rows(client: Client, sql: str, **parameters: Any) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=parameters or None)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _utc(value: datetime) -> datetime:
    """ClickHouse hands back DateTime64(.., 'UTC') values without their time zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def read_inputs(client: Client) -> PayoutInputs:
    """The newest catalog's contracts and campaigns, and the credits and clicks they pay on."""
    contracts = [
        ContractRow.model_validate(row)
        for row in _rows(client, f"SELECT {', '.join(CONTRACT_COLUMNS)} FROM catalog_contracts")
    ]
    campaigns = {
        row["campaign_id"]: CampaignRow.model_validate(
            {**row, "starts_at": _utc(row["starts_at"]), "ends_at": _utc(row["ends_at"])}
        )
        for row in _rows(client, f"SELECT {', '.join(CAMPAIGN_COLUMNS)} FROM catalog_campaigns")
    }
    credited = [
        Credited(
            row["influencer_id"],
            row["campaign_id"],
            row["model"],
            row["currency"],
            Period.parse(row["period"]),
            row["revenue"],
            row["conversions"],
        )
        for row in _rows(
            client,
            f"""
            SELECT influencer_id, campaign_id, model, {COMMISSION_CURRENCY} AS currency,
                   formatDateTime(order_at, '%Y-%m') AS period,
                   sum({COMMISSION_REVENUE}) AS revenue, sum(credit) AS conversions
            FROM credit_facts
            WHERE (influencer_id, campaign_id, model) IN
                  (SELECT influencer_id, campaign_id, commission_model FROM catalog_contracts)
            GROUP BY influencer_id, campaign_id, model, currency, period
            """,
        )
    ]
    clicks = {
        (row["influencer_id"], row["campaign_id"]): int(row["clicks"])
        for row in _rows(
            client,
            """
            SELECT influencer_id, campaign_id, count() AS clicks
            FROM classified_clicks
            WHERE status != 'invalid' AND (influencer_id, campaign_id) IN
                  (SELECT influencer_id, campaign_id FROM catalog_contracts)
            GROUP BY influencer_id, campaign_id
            """,
        )
    }
    campaign_rates = {
        row["campaign_id"]: LockedRate(row["reporting_currency"], row["rate"], row["published_on"])
        for row in _rows(
            client,
            "SELECT campaign_id, reporting_currency, rate, published_on FROM campaign_fx",
        )
    }
    return PayoutInputs(contracts, campaigns, credited, clicks, campaign_rates)


def last_closed_period(client: Client) -> Period | None:
    [[last]] = client.query("SELECT max(period) FROM payout_periods FINAL").result_rows
    return Period.parse(last) if last else None


def read_paid(client: Client) -> dict[StatementKey, Decimal]:
    """What every closed statement paid, per influencer and currency."""
    return {
        (row["influencer_id"], row["currency"]): row["paid"]
        for row in _rows(
            client,
            """
            SELECT influencer_id, currency, sum(amount) AS paid
            FROM payout_statements FINAL
            WHERE period IN (SELECT period FROM payout_periods)
            GROUP BY influencer_id, currency
            """,
        )
    }


def read_closed_statements(client: Client, period: Period) -> list[Statement]:
    lines: dict[StatementKey, list[Line]] = defaultdict(list)
    for row in _rows(
        client,
        f"""
        SELECT {", ".join(STATEMENT_COLUMNS)} FROM payout_statements FINAL
        WHERE period = {{period:String}} AND period IN (SELECT period FROM payout_periods)
        ORDER BY influencer_id, currency, line
        """,
        period=period.name,
    ):
        lines[(row["influencer_id"], row["currency"])].append(
            Line(
                row["campaign_id"],
                row["kind"],
                row["commission_model"],
                row["exact_amount"],
                row["amount"].quantize(currency_quantum(row["currency"])),
            )
        )
    return [
        Statement(period, influencer, currency, tuple(statement_lines), closed=True)
        for (influencer, currency), statement_lines in lines.items()
    ]


def store_closing(client: Client, closing: Closing, lock_days: int, as_of: datetime) -> None:
    """Store a closed period's statements once, then record the period as closed."""
    period = closing.period.name
    [[leftover]] = client.query(
        "SELECT count() FROM payout_statements WHERE period = {period:String}",
        parameters={"period": period},
    ).result_rows
    if leftover:
        client.command(
            "ALTER TABLE payout_statements DELETE WHERE period = {period:String}",
            parameters={"period": period},
            settings={"mutations_sync": 2},
        )
    rows = [
        [
            period,
            statement.influencer_id,
            statement.currency,
            number,
            line.campaign_id,
            line.kind,
            line.commission_model,
            line.exact,
            line.amount,
        ]
        for statement in closing.statements
        for number, line in enumerate(statement.lines, start=1)
    ]
    if rows:
        client.insert("payout_statements", rows, column_names=list(STATEMENT_COLUMNS))
    client.insert(
        "payout_periods",
        [[period, closing.period.lock_date(lock_days), as_of, len(closing.statements)]],
        column_names=["period", "lock_date", "as_of", "statements"],
    )


@dataclass(frozen=True)
class PayoutReport:
    period: Period
    closed: bool
    lock_date: datetime
    statements: list[Statement]
    closed_now: list[Period]


def run_payouts(client: Client, period: Period, as_of: datetime, lock_days: int) -> PayoutReport:
    """Close every period due at `as_of`, oldest first, then the statements of `period`: the
    stored ones if it is closed, else what they say now."""
    inputs = read_inputs(client)
    last_closed = last_closed_period(client)
    closings = close_due(inputs, read_paid(client), last_closed, as_of, lock_days)
    for closing in closings:
        store_closing(client, closing, lock_days, as_of)
    if closings:
        last_closed = closings[-1].period
    closed = last_closed is not None and period <= last_closed
    statements = (
        read_closed_statements(client, period)
        if closed
        else open_statements(inputs, period, read_paid(client), last_closed)
    )
    return PayoutReport(
        period,
        closed,
        period.lock_date(lock_days),
        statements,
        [closing.period for closing in closings],
    )


PAYOUT_COLUMNS = (
    "period",
    "status",
    "influencer_id",
    "currency",
    "campaign_id",
    "kind",
    "commission_model",
    "amount",
)


def statement_records(statements: Sequence[Statement]) -> Iterator[list[str]]:
    """One CSV record per line of each statement, then one of kind `total`."""
    for statement in statements:
        status = "closed" if statement.closed else "open"
        head = [statement.period.name, status, statement.influencer_id, statement.currency]
        for line in statement.lines:
            yield [*head, line.campaign_id, line.kind, line.commission_model, str(line.amount)]
        yield [*head, "", "total", "", str(statement.total)]


def report_wire(report: PayoutReport) -> dict[str, Any]:
    """The report as JSON: how a worker serves it and what the command prints or writes."""
    return {
        "period": report.period.name,
        "closed": report.closed,
        "lock_date": report.lock_date.isoformat(),
        "closed_now": [period.name for period in report.closed_now],
        "lines": list(statement_records(report.statements)),
    }
