"""`attribution demo`: services, a worker and a synthetic storefront, then a ClickHouse report."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

from schemas.catalog import read_catalog_dir
from simulation.storefront import Storefront
from sinks.catalog_store import publish_catalog
from streams.backfill import load_history
from streams.producer import produce_events
from streams.settings import Settings
from streams.worker_process import WorkerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "devstack" / "stack"
SHOPPERS_PER_SECOND = 40
HISTORY_CUSTOMERS = 150
HISTORY_FIRST_SHOPPER = 1_000_000  # apart from the live shoppers, numbered from 0

REPORT_SQL = """
SELECT
    i.influencer_id AS influencer,
    any(i.tier) AS tier,
    any(i.platform) AS platform,
    (SELECT count() FROM clicks FINAL WHERE influencer_id = i.influencer_id) AS clicks,
    sumIf(c.credit, c.model = 'last_click') AS orders_last_click,
    sumIf(c.revenue_credit, c.model = 'last_click') AS revenue_last_click,
    sumIf(c.revenue_credit, c.model = 'linear') AS revenue_linear,
    sumIf(c.revenue_credit, c.model = 'time_decay') AS revenue_time_decay,
    sumIf(c.revenue_credit, c.model = 'markov') AS revenue_markov,
    sumIf(c.revenue_credit, c.model = 'shapley') AS revenue_shapley
FROM (SELECT * FROM credits FINAL WHERE NOT is_deleted) AS c
INNER JOIN (SELECT DISTINCT influencer_id, tier, platform FROM clicks FINAL
            WHERE influencer_id != '') AS i ON i.influencer_id = c.influencer_id
GROUP BY i.influencer_id
ORDER BY revenue_last_click DESC
"""


def _services_running() -> bool:
    status = subprocess.run([str(STACK), "status"], capture_output=True, text=True, check=True)
    return "kafka: running" in status.stdout and "redis: running" in status.stdout


def _print_table(columns: list[str], rows: list[list[object]]) -> None:
    cells = [columns] + [[str(value) for value in row] for row in rows]
    widths = [max(len(row[index]) for row in cells) for index in range(len(columns))]
    for number, row in enumerate(cells):
        print("  ".join(value.rjust(width) for value, width in zip(row, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))


def run_demo(base: Settings, seconds: float) -> int:
    started_services = not _services_running()
    subprocess.run([str(STACK), "start"], check=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    settings = base.model_copy(
        update={
            "topic_prefix": f"demo{stamp}",
            "app_id": f"demo{stamp}",
            "data_dir": base.data_dir / f"demo-{stamp}",
            "web_port": free_port(),
            # Weights learned again every few seconds, so the short run shows them change.
            "data_driven_interval_seconds": 1.0,
            "weights_interval_seconds": 10.0,
            # The address rules of the fraud filter compare keyed hashes of IP addresses.
            "pii_salt": base.pii_salt
            if base.pii_salt.get_secret_value()
            else SecretStr(secrets.token_hex(16)),
        }
    )
    worker = WorkerProcess(settings, settings.data_dir / "worker.log")
    try:
        # Live sessions are dense; the customers whose events are weeks apart come first, as
        # the history a storefront backfills before it goes live.
        storefront = Storefront(
            datetime.now(UTC) - timedelta(days=2), seed=int(stamp[-6:]), sparse_share=0
        )
        catalog = read_catalog_dir(storefront.write_catalog(settings.data_dir / "catalog"))
        version = publish_catalog(settings.redis_url, settings.topic_prefix, catalog)
        print(
            f"catalog: {len(catalog.influencers)} influencers, {len(catalog.campaigns)} campaigns"
        )
        worker.start()
        worker.wait_for_catalog(version)
        base_url = f"http://{settings.web_host}:{settings.web_port}"
        print(
            f"worker ready: metrics {base_url}/metrics, readiness {base_url}/ready, "
            f"SQL {base_url}/sql, log {worker.log_path} (alerts and dashboards: docs/operations.md)"
        )
        orders = _backfill_history(settings, storefront)
        orders += _run_storefront(settings, storefront, seconds)
        _wait_for_orders(worker, orders)
        _wait_for_data_driven_credits(worker, orders)
        print("\nCredited revenue per influencer, read back from ClickHouse (credits FINAL):\n")
        columns = [
            "influencer",
            "tier",
            "platform",
            "clicks",
            "orders_last_click",
            "revenue_last_click",
            "revenue_linear",
            "revenue_time_decay",
            "revenue_markov",
            "revenue_shapley",
        ]
        rows = [
            [
                row[0],
                row[1],
                row[2],
                row[3],
                f"{float(str(row[4])):.2f}",
                *(str(value) for value in row[5:]),
            ]
            for row in worker.sql(REPORT_SQL)
        ]
        _print_table(columns, rows)
        _print_weights(worker)
        _print_flags(worker)
        totals = worker.sql("SELECT count(), sum(net_revenue) FROM orders FINAL")[0]
        late = sum(
            value
            for (name, _), value in worker.metrics().items()
            if name == "attribution_late_events_total"
        )
        print(
            f"\n{totals[0]} orders, net revenue {totals[1]} USD; "
            f"{late:.0f} events later than the allowed lateness; try:\n"
            f"  ATTRIBUTION_DATA_DIR={settings.data_dir} .venv/bin/attribution sql "
            '"SELECT campaign_id, model, credited_revenue, roas FROM campaign_kpis '
            'ORDER BY campaign_id, model"\n'
            "  (more queries: docs/analytics.md)"
        )
    finally:
        worker.stop()
        if started_services:
            subprocess.run([str(STACK), "stop"], check=True)
    return 0


def _print_weights(worker: WorkerProcess) -> None:
    """The weights the data-driven models split the orders by (docs/models.md)."""
    [[version, journeys]] = worker.sql(
        "SELECT max(version), argMax(paths, version) FROM model_weights"
    )
    print(
        f"\nmarkov and shapley split each order by weights version {version}, learned from "
        f"{journeys} journeys (version 0: none yet, split as linear); the weights:"
    )
    _print_table(
        ["influencer", "markov", "shapley"],
        [
            [str(value) for value in row]
            for row in worker.sql(
                "SELECT influencer_id, round(sumIf(weight, model = 'markov'), 4), "
                "round(sumIf(weight, model = 'shapley'), 4) FROM model_weights FINAL "
                "WHERE version = (SELECT max(version) FROM model_weights) AND influencer_id != '' "
                "GROUP BY influencer_id ORDER BY influencer_id"
            )
        ],
    )


def _print_flags(worker: WorkerProcess) -> None:
    """What the fraud filter found in the storefront's bots, leaked code and bought followers."""
    print("\nFlagged live (docs/fraud.md): clicks by classification")
    _print_table(
        ["status", "reason", "clicks"],
        [
            [str(value) for value in row]
            for row in worker.sql(
                "SELECT status, arrayJoin(if(empty(reasons), ['-'], reasons)) AS reason, count() "
                "FROM click_classifications FINAL GROUP BY status, reason ORDER BY status, reason"
            )
        ],
    )
    leaked = worker.sql(
        "SELECT code, toString(day), redemptions, toString(no_click_share), "
        "toString(spike_score) FROM code_leak_signals WHERE likely_leaked ORDER BY day, code"
    )
    print("\nPromo codes likely leaked:")
    _print_table(
        ["code", "day", "redemptions", "no_click_share", "spike_score"],
        [[str(value) for value in row] for row in leaked],
    )
    creators = worker.sql(
        "SELECT influencer_id, score, arrayStringConcat(reasons, ', ') FROM creator_authenticity "
        "WHERE score < 100 ORDER BY score, influencer_id"
    )
    print("\nCreators whose audience looks inflated (advice only, credit unchanged):")
    _print_table(["influencer", "score", "reasons"], [[str(v) for v in row] for row in creators])


def _backfill_history(settings: Settings, storefront: Storefront) -> int:
    """Send the histories of customers whose visits are days to weeks apart (several orders,
    refunds weeks later) the way `attribution backfill` does; return how many orders."""
    events = [
        event
        for customer in range(HISTORY_CUSTOMERS)
        for event in storefront.sparse_customer_events(
            HISTORY_FIRST_SHOPPER + customer, storefront.start
        )
    ]
    print(f"history: {len(events)} events of {HISTORY_CUSTOMERS} customers over months, backfilled")
    load_history(
        settings, [json.dumps(event).encode() for event in events], lambda line: print(f"  {line}")
    )
    return len({event["order_id"] for event in events if event["type"] == "order"})


def _run_storefront(settings: Settings, storefront: Storefront, seconds: float) -> int:
    """Emit shoppers' events at a steady pace for `seconds`; return how many orders were sent."""
    order_ids: set[str] = set()
    sent = 0
    began = time.monotonic()
    tick = 0
    while time.monotonic() - began < seconds:
        batch = []
        for shopper in range(tick * SHOPPERS_PER_SECOND, (tick + 1) * SHOPPERS_PER_SECOND):
            moment = storefront.start + timedelta(minutes=shopper)
            batch.extend(storefront.shopper_events(shopper, moment))
        if tick % 10 == 0:
            batch.extend(storefront.metrics_snapshots(storefront.start + timedelta(minutes=tick)))
        if tick == 0:
            batch.extend(storefront.fraud_events(storefront.start + timedelta(minutes=5)))
        order_ids.update(event["order_id"] for event in batch if event["type"] == "order")
        sent += asyncio.run(
            produce_events(settings.bootstrap_servers, settings.topic("events"), batch)
        )
        tick += 1
        if tick % 10 == 0:
            print(
                f"storefront: {sent} events sent, {len(order_ids)} orders, "
                f"{time.monotonic() - began:.0f} s"
            )
        time.sleep(max(0.0, began + tick - time.monotonic()))
    return len(order_ids)


def _wait_for_orders(worker: WorkerProcess, orders: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = int(str(worker.sql("SELECT count() FROM orders FINAL")[0][0]))
        if stored >= orders:
            return
        time.sleep(0.5)
    raise TimeoutError(f"ClickHouse did not receive all {orders} orders in {timeout} s")


def _wait_for_data_driven_credits(worker: WorkerProcess, orders: int, timeout: float = 60) -> None:
    """The worker credits stored orders under markov and shapley within seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sql = "SELECT uniqExact(order_id) FROM credits WHERE model = 'shapley'"
        if int(str(worker.sql(sql)[0][0])) >= orders:
            return
        time.sleep(0.5)
    raise TimeoutError(f"not all {orders} orders were credited under markov and shapley")
