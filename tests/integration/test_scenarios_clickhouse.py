"""Scenarios and restatement on the embedded ClickHouse engine: the history read back from the
raw tables attributes exactly as it did live, and `attribution restate` switches the views to a
new settings version, keeps the old one queryable and records both in `settings_versions`.

A storefront stream runs through the real attribution core; no Kafka is needed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from attribution.replay import LocalPipeline
from attribution.rows import CreditRow
from attribution.rules import ClickPolicy
from schemas.catalog import read_catalog_dir
from schemas.events import validate_event
from simulation.storefront import Storefront
from sinks.clickhouse import ClickHouseWriter, connect
from streams.cli import main
from streams.restate import RestateError, Restatement, adopt, credits_written, manifest
from streams.scenario import history_from_clickhouse, run_history
from streams.settings import Settings
from tests.integration.helpers import storefront_clickhouse

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
    client = connect(dsn)
    writer, live, emitted = storefront_clickhouse(client, store, directory / "catalog", PII_SALT)
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


def restate_switches_the_views_keeps_the_old_version_and_records_both(
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
        "SELECT count() FROM credits FINAL "
        "WHERE NOT is_deleted AND model NOT IN ('markov', 'shapley')"
    ).result_rows
    assert live_rows == len(restated.final_credits())
    # No weights yet: each order is split under the data-driven models as under `linear`, as
    # the worker splits it until a weights version exists.
    assert sums(
        stored.client,
        "SELECT model, count() FROM credits FINAL WHERE NOT is_deleted AND model IN "
        "('linear', 'markov', 'shapley') GROUP BY model",
    ) == dict.fromkeys(
        ("linear", "markov", "shapley"),
        Decimal(sum(1 for row in restated.final_credits() if row.model == "linear")),
    )
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
        "SELECT version, settings, ruled_to IS NULL, credits_table, orders_table, state "
        "FROM settings_versions FINAL ORDER BY version"
    ).result_rows
    assert [(v, active, c, o, state) for v, _, active, c, o, state in versions] == [
        (1, False, "credits_s1", "orders_s1", "kept"),
        (2, True, "credits", "orders", "active"),
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


def table_rows(client: Client) -> dict[str, int]:
    """Rows of every credits and orders table, by name."""
    names = client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND match(name, '^(credits|orders)(_|$)')"
    ).result_rows
    return {
        name: int(client.query(f"SELECT count() FROM {name}").result_rows[0][0]) for [name] in names
    }


def a_restate_stopped_after_the_first_exchange_is_rolled_back_by_the_next(
    stored: Stored, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Manifest times go in as UTC on a machine that is not: New York, from here on.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        before = table_rows(stored.client)
        assert before["credits_s1"] > 0 and before["credits"] > 0  # versions 1 and 2
        ruled = {v["version"]: (v["ruled_from"], v["ruled_to"]) for v in manifest(stored.client)}
        adopted = Settings(clickhouse_dsn=stored.dsn, lookback_days=1)
        stopped = Restatement.begin(stored.client, adopted, datetime.now(UTC))
        stopped.fill([])
        stopped.swap("credits")  # and the process dies: credits_staging_s3 holds version 2
        assert table_rows(stored.client)["credits_staging_s3"] == before["credits"]

        settings_file = tmp_path / "again.env"
        settings_file.write_text("ATTRIBUTION_LOOKBACK_DAYS=1\n")
        monkeypatch.setenv("ATTRIBUTION_CLICKHOUSE_DSN", stored.dsn)
        monkeypatch.setenv("ATTRIBUTION_PII_SALT", PII_SALT)
        assert main(["restate", "--settings", str(settings_file), "--processes", "1"]) == 0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    after = table_rows(stored.client)
    # Version 2's data moved whole to credits_s2 and orders_s2, version 1's stayed; no
    # staging table is left.
    assert after["credits_s1"] == before["credits_s1"]
    assert after["orders_s1"] == before["orders_s1"]
    assert after["credits_s2"] == before["credits"]
    assert after["orders_s2"] == before["orders"]
    assert after["credits"] > 0 and not any("staging" in name for name in after)
    versions = manifest(stored.client)
    assert [(v["version"], v["state"], v["credits_table"]) for v in versions] == [
        (1, "kept", "credits_s1"),
        (2, "kept", "credits_s2"),
        (3, "rolled back", "credits_staging_s3"),
        (4, "active", "credits"),
    ]
    # Rewritten in New York, version 2 still started when it did, and ended when 4 started.
    assert versions[1]["ruled_from"] == ruled[2][0]
    assert versions[1]["ruled_to"] == versions[3]["ruled_from"]
    assert versions[0]["ruled_to"] == ruled[1][1]


def a_restate_refuses_to_swap_when_credits_moved_and_rolls_back(stored: Stored) -> None:
    before = table_rows(stored.client)
    [[newest]] = stored.client.query("SELECT max(written_at) FROM credits").result_rows
    read_then = (newest, credits_written(stored.client)[1] - 1)  # a worker wrote one since
    adopted = Settings(clickhouse_dsn=stored.dsn, lookback_days=2)
    with pytest.raises(RestateError, match="stop the workers"):
        adopt(stored.client, adopted, [], datetime.now(UTC), read_then)
    assert table_rows(stored.client) == before
    assert manifest(stored.client)[-1]["state"] == "rolled back"


def erasure_reaches_the_kept_versions(stored: Stored) -> None:
    [[customer]] = stored.client.query(
        "SELECT any(customer_id) FROM orders_s1 WHERE customer_id != ''"
    ).result_rows
    ClickHouseWriter(stored.client).erase_customer(customer, "erased-1", [])
    for table in ("credits", "orders", "credits_s1", "orders_s1", "credits_s2", "orders_s2"):
        [[left]] = stored.client.query(
            f"SELECT count() FROM {table} WHERE customer_id = {{c:String}}",
            parameters={"c": customer},
        ).result_rows
        assert (table, left) == (table, 0)
    [[pseudonymous]] = stored.client.query(
        "SELECT count() FROM orders_s1 WHERE customer_id = 'erased-1'"
    ).result_rows
    assert pseudonymous > 0


def test_restate_story_switch_roll_back_refuse_and_erase(
    stored: Stored, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One story, in order: each step needs the settings versions the steps before it made (a
    test per step could run in another xdist process, on a fresh database)."""
    restate_switches_the_views_keeps_the_old_version_and_records_both(stored, monkeypatch, tmp_path)
    a_restate_stopped_after_the_first_exchange_is_rolled_back_by_the_next(
        stored, monkeypatch, tmp_path
    )
    a_restate_refuses_to_swap_when_credits_moved_and_rolls_back(stored)
    erasure_reaches_the_kept_versions(stored)


def test_restate_settings_errors_are_one_line_naming_the_line(
    stored: Stored,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ATTRIBUTION_CLICKHOUSE_DSN", stored.dsn)
    negative = tmp_path / "negative.env"
    negative.write_text("# shorter\nATTRIBUTION_LOOKBACK_DAYS=-3\n")
    assert main(["restate", "--settings", str(negative)]) == 2
    assert capsys.readouterr().err == (
        f"settings not read: {negative}:2: ATTRIBUTION_LOOKBACK_DAYS='-3': must be above 0\n"
    )
    not_a_number = tmp_path / "word.env"
    not_a_number.write_text("ATTRIBUTION_HALF_LIFE_DAYS=week\n")
    assert main(["restate", "--settings", str(not_a_number)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"settings not read: {not_a_number}:1: ATTRIBUTION_HALF_LIFE_DAYS=")
    assert error.count("\n") == 1
    latin = tmp_path / "latin.env"
    latin.write_bytes(b"# caf\xe9\n")
    assert main(["restate", "--settings", str(latin)]) == 2
    assert capsys.readouterr().err == f"settings not read: {latin}:1: not UTF-8 text\n"
    euros = tmp_path / "euros.env"
    euros.write_text("ATTRIBUTION_REPORTING_CURRENCY=EUR\n")
    assert main(["restate", "--settings", str(euros)]) == 2
    assert "a restate keeps the reporting currency" in capsys.readouterr().err
