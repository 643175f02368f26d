"""fx: orders that arrived before their day's rate was published are converted once it is.

The worker owning ClickHouse lists them (`orders_missing_fx_rate`) and sends each order whose
rate the catalog now has a `LockRate` command; the order stage locks it and restates the order.
"""

from __future__ import annotations

import logging
from datetime import date

from agents.emit import Outbox
from attribution.messages import LockRate
from streams.app import Topology

log = logging.getLogger(__name__)

WAITING_ORDERS_SQL = """
    SELECT order_id, currency, toString(toDate(order_at)) FROM orders_missing_fx_rate
    ORDER BY order_at LIMIT {limit:UInt32}
"""
ORDERS_PER_TICK = 10_000


async def lock_published_rates(topology: Topology) -> int:
    """Send the rate of every waiting order whose rate is now published; return how many."""
    catalog = topology.catalog.catalog
    _, waiting = await topology.clickhouse.writer().read(
        WAITING_ORDERS_SQL, parameters={"limit": ORDERS_PER_TICK}
    )
    topology.metrics.orders_missing_fx_rate.set(len(waiting))
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
            await lock_published_rates(topology)
        except Exception:  # the next tick tries again
            log.exception("waiting orders not converted")

    topology.app.timer(interval=topology.settings.fx_retry_seconds, name="lock-published-rates")(
        lock_rates
    )
