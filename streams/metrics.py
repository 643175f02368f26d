"""Every Prometheus metric of the worker, in one place, on a registry passed in.

Labels are bounded: event types, table names, dead-letter fields, topics and partitions,
models, tiers, platforms, currencies, and the catalog's campaigns, categories and promo codes.
Never an order, customer or visitor id.

Latencies start when the storefront event reached Kafka: its record timestamp is carried on
every command and row it leads to (`occurred_at` can be days old for a late event).

The business gauges (`attribution_credited_*`, `attribution_campaign_*`, `attribution_code_*`,
`attribution_restated_orders`) are read from ClickHouse's final state, so they are global,
not per worker: aggregate them across workers with max(), never sum().
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from attribution.benchmarks import CATEGORY_BENCHMARKS
from schemas.events import EVENT_MODELS

BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# A quarter second apart around the 1.5 s objective, so its p99 is read from bucket edges,
# not interpolated across one wide bucket.
LATENCY_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5, 7.5, 10, 30, 60, 300
)  # fmt: skip


_EVENT_FIELDS = frozenset(name for model in EVENT_MODELS.values() for name in model.model_fields)


def type_label(document: Any) -> str:
    """The event type of a dead letter's parsed payload when it names a known one, else
    'unknown'."""
    kind = document.get("type") if isinstance(document, dict) else None
    return kind if isinstance(kind, str) and kind in EVENT_MODELS else "unknown"


def field_label(field: str) -> str:
    """A bounded label for the field of a dead letter: 'items.3.sku' counts as 'items',
    a field no event has as 'other', the whole payload as 'payload'."""
    top = field.split(".", 1)[0]
    if not top:
        return "payload"
    return top if top in _EVENT_FIELDS else "other"


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_consumed = Counter(
            "attribution_events_consumed",
            "Raw storefront events read from the events topic.",
            registry=registry,
        )
        self.events_valid = Counter(
            "attribution_events_valid",
            "Events that passed validation, by type.",
            ["type"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "attribution_dead_letters",
            "Events sent to the dead-letter topic, by event type and the offending field.",
            ["type", "field"],
            registry=registry,
        )
        self.collector_events = Counter(
            "attribution_collector_events",
            "Events received by the HTTP collector, by outcome (accepted, invalid).",
            ["outcome"],
            registry=registry,
        )
        self.late_events = Counter(
            "attribution_late_events",
            "Events older than the newest event this worker has seen by more than the allowed "
            "lateness, by type: still applied, but their credit may depend on arrival order.",
            ["type"],
            registry=registry,
        )
        self.identity_conflicts = Counter(
            "attribution_identity_conflicts",
            "Later links of a visitor to another customer, ignored (contract 2.5).",
            registry=registry,
        )
        self.table_keys = Gauge(
            "attribution_table_keys",
            "Keys held by this worker in each stage table.",
            ["table"],
            registry=registry,
        )
        self.swept_keys = Counter(
            "attribution_swept_keys",
            "Idle keys deleted from a stage table by the event-time sweep.",
            ["table"],
            registry=registry,
        )
        self.sink_rows = Counter(
            "attribution_sink_rows",
            "Rows written to ClickHouse, by table.",
            ["table"],
            registry=registry,
        )
        self.sink_batch_rows = Histogram(
            "attribution_sink_batch_rows",
            "Rows per ClickHouse write.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.sink_batch_seconds = Histogram(
            "attribution_sink_batch_seconds",
            "Time to store one batch in ClickHouse, retries included.",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.sink_failures = Counter(
            "attribution_sink_failures",
            "Failed ClickHouse inserts (each is retried until it succeeds).",
            registry=registry,
        )
        self.sink_retries = Counter(
            "attribution_sink_retries",
            "Attempts to store a batch again after ClickHouse refused it.",
            registry=registry,
        )
        self.send_failures = Counter(
            "attribution_send_failures",
            "Record batches Kafka did not acknowledge, by topic (without prefix or app id): the "
            "flush that sent them failed, acknowledged nothing and is retried.",
            ["topic"],
            registry=registry,
        )
        self.fenced_flushes = Counter(
            "attribution_fenced_flushes",
            "Stage flushes that wrote nothing because the group coordinator had not confirmed "
            "recently that this worker still owns the assignment (a worker that was frozen).",
            ["stage"],
            registry=registry,
        )
        self.consumer_generation = Gauge(
            "attribution_consumer_generation",
            "Consumer group generation of this worker's current partition assignment.",
            registry=registry,
        )
        self.identity_merges = Counter(
            "attribution_identity_merges",
            "Visitors linked to a customer for the first time (their journeys merged).",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "attribution_consumer_lag",
            "Records not yet committed, per input topic (without prefix) and partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.credit_emitted_latency = Histogram(
            "attribution_credit_emitted_latency_seconds",
            "From the event reaching Kafka to the credit rows it caused being emitted.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.credit_stored_latency = Histogram(
            "attribution_credit_stored_latency_seconds",
            "From the event reaching Kafka to its credit rows being written to ClickHouse.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.data_driven_yields = Counter(
            "attribution_data_driven_yields",
            "Data-driven passes that stopped after a page because live credits waited longer "
            "than ATTRIBUTION_DATA_DRIVEN_YIELD_SECONDS (the rest is credited in later passes).",
            registry=registry,
        )
        self.data_driven_failures = Counter(
            "attribution_data_driven_failures",
            "Data-driven ticks that failed (logged; the next tick tries again): markov and "
            "shapley credits and the weights stop moving while they fail.",
            registry=registry,
        )
        self.credited_revenue = Gauge(
            "attribution_credited_revenue",
            "Net revenue credited to influencers (final state), by model, tier, platform.",
            ["model", "tier", "platform", "currency"],
            registry=registry,
        )
        self.credited_conversions = Gauge(
            "attribution_credited_conversions",
            "Credited conversions (sum of credit, final state), by model, tier, platform.",
            ["model", "tier", "platform"],
            registry=registry,
        )
        self.clicks_classified = Counter(
            "attribution_clicks_classified_total",
            "Influencer click classifications sent (a reclassified click counts again), by status.",
            ["status"],
            registry=registry,
        )
        self.click_flags = Counter(
            "attribution_click_flags_total",
            "Reasons given to classified clicks (known_crawler, empty_user_agent, duplicate_click, "
            "click_burst), a reclassified click's again.",
            ["reason"],
            registry=registry,
        )
        self.restated_orders = Gauge(
            "attribution_restated_orders",
            "Orders whose credit was restated at least once (final version above 1).",
            registry=registry,
        )
        self.orders_missing_fx_rate = Gauge(
            "attribution_orders_missing_fx_rate",
            "Orders attributed in their own currency only, waiting for their day's exchange rate "
            "(the view orders_missing_fx_rate).",
            registry=registry,
        )
        self.campaign_clicks = Gauge(
            "attribution_campaign_clicks",
            "Influencer clicks of each live campaign.",
            ["campaign", "category"],
            registry=registry,
        )
        self.campaign_conversion_ratio = Gauge(
            "attribution_campaign_conversion_ratio",
            "Credited conversions / clicks of each live campaign, by model (0.035 is 3.5%).",
            ["campaign", "category", "model"],
            registry=registry,
        )
        self.campaign_aov = Gauge(
            "attribution_campaign_aov",
            "Credited revenue / credited conversions of each live campaign, by model.",
            ["campaign", "category", "model", "currency"],
            registry=registry,
        )
        self.campaign_start = Gauge(
            "attribution_campaign_start_timestamp_seconds",
            "When each live campaign started (Unix time).",
            ["campaign", "category"],
            registry=registry,
        )
        # Today's row of the view code_leak_signals for each code of a live campaign (UTC day).
        self.code_redemptions = Gauge(
            "attribution_code_redemptions",
            "Orders that redeemed each promo code of a live campaign today (UTC).",
            ["code", "campaign"],
            registry=registry,
        )
        self.code_no_click_ratio = Gauge(
            "attribution_code_no_click_ratio",
            "Share of today's redemptions of a code whose order has no click of the code's "
            "owner (0.9 is 90%; orders decided by code_wins and orders not arrived left out).",
            ["code", "campaign"],
            registry=registry,
        )
        self.code_new_customer_ratio = Gauge(
            "attribution_code_new_customer_ratio",
            "Share of today's redemptions of a code made on a customer's first order.",
            ["code", "campaign"],
            registry=registry,
        )
        self.code_leak_score = Gauge(
            "attribution_code_leak_score",
            "Robust spike score of today's redemptions of a code against its trailing 28 days: "
            "(today - median) / (1.4826 x MAD), the scale floored at 1 redemption.",
            ["code", "campaign"],
            registry=registry,
        )
        self.benchmark_conversion_ratio = Gauge(
            "attribution_category_benchmark_conversion_ratio",
            "The category's benchmark conversion rate range (bound: low, high).",
            ["category", "bound"],
            registry=registry,
        )
        self.benchmark_aov = Gauge(
            "attribution_category_benchmark_aov",
            "The category's benchmark AOV range in USD (bound: low, high).",
            ["category", "bound"],
            registry=registry,
        )
        for category, benchmark in CATEGORY_BENCHMARKS.items():
            for bound, rate, aov in (
                ("low", benchmark.conversion_low, benchmark.aov_low),
                ("high", benchmark.conversion_high, benchmark.aov_high),
            ):
                self.benchmark_conversion_ratio.labels(category, bound).set(float(rate))
                self.benchmark_aov.labels(category, bound).set(float(aov))

    def count_classification(self, status: str, reasons: tuple[str, ...]) -> None:
        """A click classification sent on (by the traffic stage, or by routing without a key)."""
        self.clicks_classified.labels(status).inc()
        for reason in reasons:
            self.click_flags.labels(reason).inc()
