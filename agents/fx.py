"""fx: orders that arrived before their day's rate was published are converted once it is.

The worker owning ClickHouse lists them (`orders_missing_fx_rate`) and sends each order whose
rate the catalog now has a `LockRate` command; the order stage locks it and restates the order.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

from agents.emit import Outbox
from attribution.messages import LockRate
from streams.app import Topology

log = logging.getLogger(__name__)

# Newest first, and only orders the order stage still holds (older ones can no longer be
# restated): orders whose currency never gets a rate must not crowd out the ones that can.
WAITING_ORDERS_SQL = """
    SELECT order_id, currency, toString(toDate(order_at)) FROM orders_missing_fx_rate
    WHERE order_at >= {oldest:DateTime64(6, 'UTC')} AND currency IN {currencies:Array(String)}
    ORDER BY order_at DESC LIMIT {limit:UInt32}
"""
WAITING_COUNT_SQL = "SELECT count() FROM orders_missing_fx_rate"
ORDERS_PER_TICK = 10_000


async def lock_published_rates(topology: Topology, now: datetime) -> int:
    """Send the rate of every waiting order whose rate is now published; return how many."""
    catalog = topology.catalog.catalog
    writer = topology.clickhouse.writer()
    _, [[count]] = await writer.read(WAITING_COUNT_SQL)
    topology.metrics.orders_missing_fx_rate.set(int(count))
    oldest = now - topology.settings.rules.order_retention
    _, waiting = await writer.read(
        WAITING_ORDERS_SQL,
        parameters={
            "oldest": oldest.replace(tzinfo=None),
            "currencies": sorted(catalog.exchange_rates.currencies()),
            "limit": ORDERS_PER_TICK,
        },
    )
    outbox = Outbox(topology)
    locked = 0
    for order_id, currency, day in waiting:
        rate = catalog.exchange_rate(currency, date.fromisoformat(day))
        if rate is not None:
            outbox.order_command(LockRate(order_id, rate))
            locked += 1
    if locked:
        await outbox.send()
        log.info("sent the newly published rates of %d orders", locked)
    return locked


def register(topology: Topology) -> None:
    async def lock_rates() -> None:
        try:
            await lock_published_rates(topology, datetime.now(UTC))
        except Exception:  # the next tick tries again
            log.exception("waiting orders not converted")

    topology.app.timer(interval=topology.settings.fx_retry_seconds, name="lock-published-rates")(
        lock_rates
    )
