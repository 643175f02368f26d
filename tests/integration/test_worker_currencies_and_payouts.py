"""An order placed on a day whose exchange rate is not published yet is attributed in its own
currency at once, waits in `orders_missing_fx_rate`, and is converted by the running worker when
`attribution catalog load` brings an `fx_rates.csv` with that day; and `attribution payouts` next to
the running worker that holds the embedded engine."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.helpers import click, feed
from tests.integration.test_catalog_load import load
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

# Far in the future: no shipped ECB history reaches it, whenever the suite runs.
ORDER_DAY = "2099-01-05"


@pytest.fixture
def fast_fx_worker(isolated_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    settings = isolated_settings.model_copy(
        update={"fx_retry_seconds": 0.5, "data_driven_interval_seconds": 0.5}
    )
    process = WorkerProcess(settings, tmp_path / "worker.log")
    process.start()
    yield process
    process.stop()


def test_a_waiting_order_is_converted_when_its_days_rate_is_loaded(
    fast_fx_worker: WorkerProcess, tmp_path: Path
) -> None:
    worker = fast_fx_worker
    settings = worker.settings
    order = {
        "type": "order",
        "event_id": "o1",
        "occurred_at": f"{ORDER_DAY}T10:00:00Z",
        "order_id": "O1",
        "customer_id": "u1",
        "currency": "EUR",
        "total": "80.00",
    }
    anna = click(
        "k1", url="https://s/", influencer_id="anna", campaign_id="spring", customer_id="u1"
    )
    anna["occurred_at"] = f"{ORDER_DAY}T09:00:00Z"
    feed(settings, [json.dumps(anna).encode(), json.dumps(order).encode()])

    in_own_currency = "SELECT toString(revenue_credit), reporting_currency FROM credits FINAL "
    in_own_currency += "WHERE model = 'linear' AND NOT is_deleted"
    wait_until(
        lambda: worker.sql(in_own_currency) == [["80", ""]],
        timeout=60,
        what="the order credited in EUR, with no reporting amount yet",
    )
    wait_until(
        lambda: worker.metric("attribution_orders_missing_fx_rate") == 1,
        timeout=60,
        what="the waiting order counted",
    )
    assert worker.sql("SELECT order_id FROM orders_missing_fx_rate") == [["O1"]]

    # A first catalog without rates of its own: the shipped history is written to `fx_rates`;
    # the next version writes the day it adds (only that day: tests/unit/test_catalog.py).
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    assert load(settings, catalog).returncode == 0
    wait_until(
        lambda: worker.sql("SELECT count() > 100000 FROM fx_rates") == [[1]],
        timeout=60,
        what="the shipped rates written",
    )
    (catalog / "fx_rates.csv").write_text(f"Date,USD,\n{ORDER_DAY},1.2500,\n")
    loaded = load(settings, catalog)
    assert loaded.returncode == 0, loaded.stderr
    day_rate = "SELECT currency, toString(rate) FROM fx_rates FINAL "
    day_rate += f"WHERE published_on = '{ORDER_DAY}' ORDER BY currency"
    wait_until(
        lambda: worker.sql(day_rate) == [["EUR", "1.25"], ["USD", "1"]],
        timeout=60,
        what="the added day's rates written",
    )

    converted = "SELECT toString(reporting_revenue_credit), reporting_currency, "
    converted += (
        "toString(fx_rate_date) FROM credits FINAL WHERE model = 'linear' AND NOT is_deleted"
    )
    wait_until(
        lambda: worker.sql(converted) == [["100", "USD", ORDER_DAY]],
        timeout=60,
        what="80.00 EUR converted at 1.25 to 100.00 USD once the day's rate was loaded",
    )
    assert worker.sql("SELECT count() FROM orders_missing_fx_rate") == [[0]]
    # The worker credits the restated order under the data-driven models too (no weights yet:
    # as linear), from the rows it stored.
    data_driven = converted.replace("model = 'linear'", "model IN ('markov', 'shapley')")
    wait_until(
        lambda: worker.sql(data_driven) == [["100", "USD", ORDER_DAY]] * 2,
        timeout=60,
        what="the order converted under markov and shapley as well",
    )


def test_payouts_run_through_the_worker_that_holds_the_embedded_engine(
    fast_fx_worker: WorkerProcess, tmp_path: Path
) -> None:
    """The embedded engine opens in one process: `attribution payouts` asks the running worker."""
    worker = fast_fx_worker
    settings = worker.settings
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "contracts.csv").write_text(
        "influencer_id,campaign_id,fee_per_post,posts,retainer,commission_rate,"
        "bonus_amount,bonus_metric,bonus_threshold\nanna,spring,0,0,0,0.10,0,,0\n"
    )
    assert load(settings, catalog).returncode == 0
    worker.wait_for_catalog(1)
    anna = click("k1", url="https://s/", influencer_id="anna", campaign_id="spring")
    anna |= {"customer_id": "u1", "occurred_at": "2026-10-05T09:00:00Z"}
    order = {
        "type": "order",
        "event_id": "o1",
        "occurred_at": "2026-10-05T10:00:00Z",
        "order_id": "O1",
        "customer_id": "u1",
        "currency": "USD",
        "total": "80.00",
    }
    feed(settings, [json.dumps(anna).encode(), json.dumps(order).encode()])
    wait_until(
        lambda: worker.sql("SELECT count() FROM credit_facts WHERE model = 'last_click'") == [[1]],
        timeout=60,
        what="the order credited to anna",
    )

    out = tmp_path / "october.csv"
    command = ["payouts", "--period", "2026-10", "--as-of", "2026-12-02T00:00:00Z"]
    payouts = subprocess.run(
        [sys.executable, "-m", "streams.cli", *command, "--out", str(out)],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        check=False,
    )

    assert payouts.returncode == 0, payouts.stderr
    assert "closed 2026-10" in payouts.stderr
    with out.open(newline="") as handle:
        lines = [(row["kind"], row["amount"]) for row in csv.DictReader(handle)]
    assert lines == [("commission", "8.00"), ("total", "8.00")]  # 10% of 80.00
    assert worker.sql("SELECT period FROM payout_periods FINAL") == [["2026-10"]]
