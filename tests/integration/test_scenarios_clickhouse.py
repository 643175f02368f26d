"""Scenarios and restatement on the embedded ClickHouse engine: the history read back from the
raw tables attributes exactly as it did live, and `attribution restate` switches the views to a
new settings version, keeps the old one queryable and records both in `settings_versions`.

A storefront stream runs through the real attribution core; no Kafka is needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from attribution.replay import LocalPipeline
from attribution.rows import CreditRow, Row
from attribution.rules import ClickPolicy, Rules
from schemas.catalog import read_catalog_dir
from schemas.events import validate_event
from simulation.storefront import Storefront
from sinks.catalog_store import catalog_rows, exchange_rates
from sinks.clickhouse import ClickHouseWriter, connect
from sinks.migrations import migrate
from streams.cli import main
from streams.scenario import history_from_clickhouse, run_history
from streams.settings import Settings

pytestmark = pytest.mark.integration
PII_SALT = "scenario-salt"


@dataclass
class Stored:
    dsn: str
    client: Client
    live: LocalPipeline
    events: list[dict[str, Any]]
    directory: Path


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    directory = tmp_path_factory.mktemp("scenarios")
    dsn = f"chdb://{directory / 'clickhouse'}"
    store = Storefront(datetime(2026, 3, 1, tzinfo=UTC), seed=5)
    files = read_catalog_dir(store.write_catalog(directory / "catalog"))
    client = connect(dsn)
    migrate(client)
    writer = ClickHouseWriter(client)
    writer.insert_now(
        catalog_rows(files, 1, datetime(2026, 2, 1, tzinfo=UTC), exchange_rates(files, "USD"))
    )
    emitted: list[Row] = []
    live = LocalPipeline(
        store.static_catalog(), Rules(), pii_key=PII_SALT.encode(), on_rows=emitted.extend
    )
    events = store.events(400)
    live.feed_all(validate_event(event) for event in events)
    writer.insert_now(row.to_wire() for row in emitted)
    try:
        yield Stored(dsn, client, live, events, directory)
    finally:
        client.close()


def credit_facts(rows: list[CreditRow]) -> list[tuple[Any, ...]]:
    """What a credit says, without the row version (arrival order numbers restatements)."""
    return sorted(
        (r.order_id, r.model, r.touchpoint_event_id, r.influencer_id, r.credit, r.revenue_credit)
        for r in rows
        if not r.is_deleted
    )


def test_the_history_read_back_from_clickhouse_attributes_as_it_did_live(stored: Stored) -> None:
    settings = Settings(clickhouse_dsn=stored.dsn, pii_salt=PII_SALT)
    history = history_from_clickhouse(stored.client, "USD")
    catalog = read_catalog_dir(stored.directory / "catalog")
    outcome, invalid = run_history(
        history, catalog, settings, settings.rules, 1, keep_rows=True, pii_key=b"any key"
    )
    assert invalid == []
    replayed = [row for row in outcome.final_rows if isinstance(row, CreditRow)]
    assert credit_facts(replayed) == credit_facts(stored.live.final_credits())


def sums(client: Client, sql: str) -> dict[str, Decimal]:
    return {str(key): Decimal(value) for key, value in client.query(sql).result_rows}


def test_restate_switches_the_views_keeps_the_old_version_and_records_both(
    stored: Stored, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    revenue_by_influencer = (
        "SELECT influencer_id, sum(revenue_credit) FROM credit_facts "
        "WHERE model = 'last_click' GROUP BY influencer_id"
    )
    before = sums(stored.client, revenue_by_influencer)
    settings_file = tmp_path / "restated.env"
    settings_file.write_text(
        "# a shorter lookback and no credit for suspicious clicks\n"
        "ATTRIBUTION_LOOKBACK_DAYS=0.02\nATTRIBUTION_CLICK_POLICY='strict'\n"
    )
    monkeypatch.setenv("ATTRIBUTION_CLICKHOUSE_DSN", stored.dsn)
    monkeypatch.setenv("ATTRIBUTION_PII_SALT", PII_SALT)
    assert main(["restate", "--settings", str(settings_file), "--processes", "2"]) == 0

    after = sums(stored.client, revenue_by_influencer)
    assert after != before
    # Half an hour of lookback leaves orders unattributed: less credited to influencers.
    assert sum(after.values()) < sum(before.values())
    # `credits` holds what the new settings credit the same events.
    adopted = Settings(lookback_days=0.02, click_policy=ClickPolicy.STRICT).rules
    restated = LocalPipeline(stored.live.catalog, adopted, pii_key=PII_SALT.encode())
    restated.feed_all(validate_event(event) for event in stored.events)
    [[live_rows]] = stored.client.query(
        "SELECT count() FROM credits FINAL WHERE NOT is_deleted"
    ).result_rows
    assert live_rows == len(restated.final_credits())
    assert sums(
        stored.client,
        "SELECT influencer_id, sum(revenue_credit) FROM credits FINAL "
        "WHERE NOT is_deleted AND model = 'linear' GROUP BY influencer_id",
    ) == {
        influencer: sum(
            (r.revenue_credit for r in restated.final_credits()
             if r.influencer_id == influencer and r.model == "linear"),
            Decimal(0),
        )
        for influencer in {r.influencer_id for r in restated.final_credits()}
    }  # fmt: skip
    [[old_rows]] = stored.client.query(
        "SELECT count() FROM credits_s1 FINAL WHERE NOT is_deleted"
    ).result_rows
    assert old_rows == len(stored.live.final_credits())
    old = sums(
        stored.client,
        "SELECT influencer_id, sum(reporting_revenue_credit) FROM credits_s1 FINAL "
        "WHERE NOT is_deleted AND influencer_id != '' AND model = 'last_click' "
        "GROUP BY influencer_id",
    )
    assert old == before
    [[orders_kept]] = stored.client.query("SELECT count() FROM orders_s1 FINAL").result_rows
    assert orders_kept == len(stored.live.final_orders())

    versions = stored.client.query(
        "SELECT version, settings, ruled_to IS NULL, credits_table, orders_table "
        "FROM settings_versions FINAL ORDER BY version"
    ).result_rows
    assert [(v, active, c, o) for v, _, active, c, o in versions] == [
        (1, False, "credits_s1", "orders_s1"),
        (2, True, "credits", "orders"),
    ]
    assert json.loads(versions[0][1])["lookback_days"] == "30"
    assert json.loads(versions[1][1])["lookback_days"] == "0.02"
    assert json.loads(versions[1][1])["click_policy"] == "strict"


def test_restate_refuses_a_settings_file_with_an_unknown_setting(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_file = tmp_path / "typo.env"
    settings_file.write_text("ATTRIBUTION_LOOKBAK_DAYS=14\n")
    assert main(["restate", "--settings", str(settings_file)]) == 2
    assert "typo.env:1: no such setting 'ATTRIBUTION_LOOKBAK_DAYS'" in capsys.readouterr().err
