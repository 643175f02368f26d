"""Invalid traffic end to end on real Kafka and embedded ClickHouse: with a PII key the clicks of
one address are compared in the traffic stage, every click's classification lands in ClickHouse
as the replay finds it, invalid clicks earn nothing, and the KPI views count valid clicks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from attribution.replay import LocalPipeline
from attribution.rows import ClickClassificationRow, Row
from schemas.catalog import read_catalog_dir
from schemas.events import decode_event
from simulation.storefront import Storefront
from sinks.catalog_store import to_static_catalog
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.helpers import feed, publish_storefront, replay_credits, wait_for_credits
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def replayed_classifications(
    lines: list[bytes], catalog_dir: Path, settings: Settings
) -> set[tuple[str, str, str]]:
    rows: list[Row] = []
    pipeline = LocalPipeline(
        to_static_catalog(read_catalog_dir(catalog_dir)),
        settings.rules,
        on_rows=rows.extend,
        pii_key=settings.pii_key,
    )
    for line in lines:
        pipeline.feed(decode_event(line))
    newest: dict[str, ClickClassificationRow] = {}
    for row in rows:
        if isinstance(row, ClickClassificationRow):
            known = newest.get(row.event_id)
            if known is None or row.version >= known.version:
                newest[row.event_id] = row
    return {(row.event_id, row.status, ",".join(row.reasons)) for row in newest.values()}


def test_bots_and_farms_are_classified_in_clickhouse_as_the_replay_finds(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings.model_copy(update={"pii_salt": SecretStr("fraud-test-salt")})
    storefront = Storefront(datetime(2026, 5, 1, tzinfo=UTC), seed=17, sparse_share=0)
    events = storefront.events(300) + storefront.fraud_events(storefront.start + timedelta(days=1))
    catalog_dir, version, lines = publish_storefront(settings, storefront, tmp_path, events)
    expected_credits = replay_credits(lines, catalog_dir, settings)
    expected = replayed_classifications(lines, catalog_dir, settings)
    invalid = {event_id for event_id, status, _ in expected if status == "invalid"}
    assert {"fraud-crawl-0", "fraud-farm-0", "fraud-double-2"} <= invalid

    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_for_catalog(version)
        feed(settings, lines)
        assert wait_for_credits(worker, expected_credits) == expected_credits
        stored: set[tuple[str, str, str]] = set()

        def classified_as_replayed() -> bool:
            nonlocal stored
            stored = {
                (str(event_id), str(status), str(reasons))
                for event_id, status, reasons in worker.sql(
                    "SELECT event_id, status, arrayStringConcat(reasons, ',') "
                    "FROM click_classifications FINAL"
                )
            }
            return stored == expected

        wait_until(classified_as_replayed, timeout=60, what="the replay's click classifications")
        farm_order = worker.sql(
            "SELECT DISTINCT influencer_id FROM credits FINAL "
            "WHERE order_id = 'fraud-farm-order' AND NOT is_deleted"
        )
        assert farm_order == [[""]]  # its only click was the farm's: unattributed
        [[valid, invalid_clicks]] = worker.sql(
            "SELECT sum(clicks), sum(invalid_clicks) FROM campaign_kpis WHERE model = 'linear'"
        )
        assert (int(str(valid)), int(str(invalid_clicks))) == (
            len(expected) - len(invalid),
            len(invalid),
        )
        assert worker.metric("attribution_click_flags_total", reason="click_burst") >= 25
        by_status = worker.sql(
            "SELECT status, count() FROM classified_clicks GROUP BY status ORDER BY status"
        )
        assert {str(status): int(str(count)) for status, count in by_status}.get("invalid") == len(
            invalid
        )
    finally:
        worker.stop()
