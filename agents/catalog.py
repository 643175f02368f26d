"""catalog: every worker reloads the catalog when a new version is published in Redis; the one
owning ClickHouse copies it to the dimension tables analysts join on."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from decimal import Decimal

from attribution.fx import days_changed
from sinks.catalog_store import catalog_rows
from streams.app import Topology

log = logging.getLogger(__name__)


def register(topology: Topology) -> None:
    written_version = -1
    # The catalog's own rates when `fx_rates` was last written. The table holds every rate of
    # the bundled ECB history (about 230,000 rows, seconds of the writer's thread that the
    # sink's inserts would wait behind): a new catalog version writes the days whose rates
    # changed, all of them only the first time.
    written_rates: dict[date, dict[str, Decimal]] | None = None

    async def refresh_catalog() -> None:
        """Retried on the next tick when ClickHouse refuses the dimension rows."""
        nonlocal written_version, written_rates
        await topology.catalog.refresh()
        catalog = topology.catalog
        if (
            not topology.owns_clickhouse
            or catalog.version <= 0
            or catalog.version == written_version
        ):
            return
        rates = catalog.files.fx_rates
        changed = None if written_rates is None else days_changed(written_rates, rates)
        rows = catalog_rows(
            catalog.files,
            catalog.version,
            datetime.now(UTC),
            catalog.catalog.exchange_rates,
            rates_published_on=changed,
        )
        try:
            await topology.clickhouse.writer().insert(rows)
        except Exception:
            log.exception("catalog version %d not written to ClickHouse", catalog.version)
            return
        written_version = catalog.version
        written_rates = rates

    topology.app.timer(interval=topology.settings.catalog_refresh_seconds, name="refresh-catalog")(
        refresh_catalog
    )
