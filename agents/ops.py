"""What operations watch: consumer lag, readiness, and the business gauges read from ClickHouse."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from faust.web import Request, Response, View

from attribution.kpis import average_order_value, conversion_rate
from sinks.fraud_views import code_leak_select
from streams.app import Topology

log = logging.getLogger(__name__)

CREDITED_SQL = """
    SELECT model, tier, platform, currency, toString(sum(revenue_credit)), toString(sum(credit))
    FROM credits FINAL
    WHERE NOT is_deleted AND influencer_id != ''
    GROUP BY model, tier, platform, currency
"""
RESTATED_SQL = "SELECT count() FROM orders FINAL WHERE version > 1"
CAMPAIGN_CLICKS_SQL = """
    SELECT campaign_id, count() FROM clicks FINAL
    WHERE campaign_id IN {campaigns:Array(String)} GROUP BY campaign_id
"""
CAMPAIGN_CREDITS_SQL = """
    SELECT campaign_id, model, currency, toString(sum(credit)), toString(sum(revenue_credit))
    FROM credits FINAL
    WHERE NOT is_deleted AND campaign_id IN {campaigns:Array(String)}
    GROUP BY campaign_id, model, currency
"""
# The view's figures for one day, reading only the redemptions that day needs.
CODE_LEAK_SQL = f"""
    SELECT code, campaign_id, redemptions, no_click_share, new_customer_share, spike_score
    FROM ({code_leak_select("{day:Date}")})
    WHERE campaign_id IN {{campaigns:Array(String)}}
"""


async def refresh_business_metrics(topology: Topology, now: datetime) -> None:
    """Set the credited-revenue, restatement, live-campaign and promo-code gauges from ClickHouse.

    The queries run on the ClickHouse writer's thread, off the event loop; the gauges are all
    set afterwards in one step, so a scrape never sees them half cleared."""
    metrics = topology.metrics
    writer = topology.clickhouse.writer()
    live = {
        campaign.campaign_id: campaign
        for campaign in topology.catalog.files.campaigns
        if campaign.starts_at <= now <= campaign.ends_at
    }
    _, credited = await writer.read(CREDITED_SQL)
    _, restated = await writer.read(RESTATED_SQL)
    click_rows: list[list[Any]] = []
    credit_rows: list[list[Any]] = []
    code_rows: list[list[Any]] = []
    if live:
        campaigns = {"campaigns": sorted(live)}
        _, click_rows = await writer.read(CAMPAIGN_CLICKS_SQL, parameters=campaigns)
        _, credit_rows = await writer.read(CAMPAIGN_CREDITS_SQL, parameters=campaigns)
        _, code_rows = await writer.read(
            CODE_LEAK_SQL, parameters={**campaigns, "day": now.astimezone(UTC).date()}
        )

    metrics.credited_revenue.clear()
    metrics.credited_conversions.clear()
    conversions_by_label: dict[tuple[str, str, str], Decimal] = {}
    for model, tier, platform, currency, revenue, conversions in credited:
        metrics.credited_revenue.labels(model, tier, platform, currency).set(float(revenue))
        key = (model, tier, platform)
        conversions_by_label[key] = conversions_by_label.get(key, Decimal(0)) + Decimal(conversions)
    for (model, tier, platform), conversions in conversions_by_label.items():
        metrics.credited_conversions.labels(model, tier, platform).set(float(conversions))

    metrics.restated_orders.set(restated[0][0])

    for gauge in (
        metrics.campaign_clicks,
        metrics.campaign_conversion_ratio,
        metrics.campaign_aov,
        metrics.campaign_start,
        metrics.code_redemptions,
        metrics.code_no_click_ratio,
        metrics.code_new_customer_ratio,
        metrics.code_leak_score,
    ):
        gauge.clear()
    if not live:
        return
    for code, campaign_id, redemptions, no_click_share, new_customer_share, score in code_rows:
        metrics.code_redemptions.labels(code, campaign_id).set(redemptions)
        metrics.code_leak_score.labels(code, campaign_id).set(score)
        # A share with nothing to divide by (no order arrived yet) is left unexported.
        if no_click_share is not None:
            metrics.code_no_click_ratio.labels(code, campaign_id).set(float(no_click_share))
        if new_customer_share is not None:
            metrics.code_new_customer_ratio.labels(code, campaign_id).set(float(new_customer_share))
    clicks = {campaign_id: int(count) for campaign_id, count in click_rows}
    conversions_by_model: dict[tuple[str, str], Decimal] = {}
    for campaign_id, model, currency, conversions, revenue in credit_rows:
        category = live[campaign_id].category
        by_model = (campaign_id, model)
        conversions_by_model[by_model] = conversions_by_model.get(by_model, Decimal(0)) + Decimal(
            conversions
        )
        aov = average_order_value(Decimal(revenue), Decimal(conversions))
        if aov is not None:
            metrics.campaign_aov.labels(campaign_id, category, model, currency).set(float(aov))
    for (campaign_id, model), conversions in conversions_by_model.items():
        rate = conversion_rate(conversions, clicks.get(campaign_id, 0))
        if rate is not None:
            category = live[campaign_id].category
            metrics.campaign_conversion_ratio.labels(campaign_id, category, model).set(float(rate))
    for campaign_id, campaign in live.items():
        metrics.campaign_clicks.labels(campaign_id, campaign.category).set(
            clicks.get(campaign_id, 0)
        )
        metrics.campaign_start.labels(campaign_id, campaign.category).set(
            campaign.starts_at.timestamp()
        )


async def readiness(topology: Topology) -> dict[str, bool]:
    """Ready = partitions assigned, tables recovered, ClickHouse answering (if it writes there)."""
    app: Any = topology.app
    checks = {"partitions_assigned": False, "tables_recovered": False}
    try:
        checks["partitions_assigned"] = bool(app.consumer.assignment())
        checks["tables_recovered"] = app.tables.recovery.completed.is_set() and not app.rebalancing
    except Exception:  # the consumer is not started yet
        log.debug("consumer not ready", exc_info=True)
    if not topology.owns_clickhouse:
        return checks
    checks["clickhouse"] = False
    try:
        await topology.clickhouse.writer().read("SELECT 1")
        checks["clickhouse"] = True
    except Exception:
        log.warning("ClickHouse does not answer", exc_info=True)
    return checks


def register(topology: Topology) -> None:
    app: Any = topology.app
    settings = topology.settings
    metrics = topology.metrics
    input_prefix = settings.topic_prefix + "."

    async def consumer_lag() -> None:
        partitions = [tp for tp in app.consumer.assignment() if tp.topic.startswith(input_prefix)]
        if not partitions:
            return
        highwaters = await app.consumer.highwaters(*partitions)
        # The consumer's view: offsets read from the broker when partitions were assigned, then
        # each commit of this process (the monitor's counts only the latter, so a restarted
        # worker with nothing new to commit showed its whole topic as lag).
        committed = app.consumer._committed_offset
        metrics.consumer_lag.clear()
        for tp in partitions:
            highwater = highwaters.get(tp)
            if highwater is not None:
                lag = max(highwater - (committed.get(tp) or 0), 0)
                topic = tp.topic[len(input_prefix) :]
                metrics.consumer_lag.labels(topic, str(tp.partition)).set(lag)

    app.timer(interval=settings.lag_interval_seconds, name="consumer-lag")(consumer_lag)

    if topology.owns_clickhouse:

        async def business_metrics() -> None:
            try:
                await refresh_business_metrics(topology, datetime.now(UTC))
            except Exception:  # the next tick tries again; the gauges keep their last values
                log.exception("business metrics not refreshed from ClickHouse")

        app.timer(interval=settings.business_metrics_seconds, name="business-metrics")(
            business_metrics
        )

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            checks = await readiness(topology)
            return self.json(
                {"ready": all(checks.values()), **checks},
                status=200 if all(checks.values()) else 503,
            )
