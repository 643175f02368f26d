"""The ClickHouse schema as numbered migrations, applied in order at start-up.

Each applied migration is recorded in `schema_migrations`; starting again applies only the
new ones. Every statement is idempotent (IF NOT EXISTS, CREATE OR REPLACE, inserts into
ReplacingMergeTree tables keyed by what they insert), so two workers starting at once
against one server end with the same schema.

The KPI views read the final state (FINAL, deletions dropped) and follow contract 6. Ratios are
exact decimals (`divideDecimal`), NULL when their denominator is 0. Amounts are in the reporting
currency (migration 11).
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from attribution.benchmarks import CATEGORY_BENCHMARKS
from sinks.clickhouse import SCHEMA, catalog_view
from sinks.fraud_views import FRAUD_VIEWS
from sinks.payouts import PAYOUT_TABLES

MODELS_ARRAY = "['first_click', 'last_click', 'linear', 'position_based', 'time_decay']"
# The rule-based models and the data-driven ones (migration 15).
ALL_MODELS_ARRAY = (
    "['first_click', 'last_click', 'linear', 'position_based', 'time_decay', 'markov', 'shapley']"
)
DEFAULT_MARGIN = "0.30"  # the campaign guide's worked example; set yours in category_margins


def ratio(numerator: str, denominator: str, scale: int = 6) -> str:
    """SQL for numerator / denominator as a decimal of `scale` digits, NULL when dividing by 0."""
    return (
        f"if(({denominator}) = 0, NULL, divideDecimal(toDecimal128({numerator}, 18), "
        f"toDecimal128(if(({denominator}) = 0, 1, {denominator}), 18), {scale}))"
    )


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


REFERENCE_TABLES = (
    """
    CREATE TABLE IF NOT EXISTS category_benchmarks (
        category LowCardinality(String),
        conversion_rate_low Decimal(9, 4),
        conversion_rate_high Decimal(9, 4),
        aov_low Decimal(38, 4),
        aov_high Decimal(38, 4)
    ) ENGINE = ReplacingMergeTree ORDER BY category
    """,
    "INSERT INTO category_benchmarks VALUES "
    + ", ".join(
        f"('{category}', {benchmark.conversion_low * 100}, {benchmark.conversion_high * 100}, "
        f"{benchmark.aov_low}, {benchmark.aov_high})"
        for category, benchmark in CATEGORY_BENCHMARKS.items()
    ),
    """
    CREATE TABLE IF NOT EXISTS category_margins (
        category LowCardinality(String),
        margin Decimal(9, 6),
        updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(updated_at) ORDER BY category
    """,
    # Only categories without a margin yet: a margin an analyst set is never overwritten.
    f"""
    INSERT INTO category_margins (category, margin)
    SELECT category, {DEFAULT_MARGIN} FROM category_benchmarks FINAL
    WHERE category NOT IN (SELECT category FROM category_margins)
    """,
)

# What a row of totals `d` says about conversions, shared by the daily and campaign views.
CONVERSION_COLUMNS = f"""d.credited_conversions AS credited_conversions,
           {ratio("100 * d.credited_conversions", "d.clicks", 4)} AS conversion_rate,
           d.credited_revenue AS credited_revenue,
           {ratio("d.credited_revenue", "d.credited_conversions", 4)} AS aov,
           d.gross_revenue AS gross_revenue, d.refunded AS refunded,
           {ratio("d.refunded", "d.gross_revenue")} AS return_rate,
           d.new_customers AS new_customers"""

KPI_VIEWS = (
    """
    CREATE OR REPLACE VIEW first_orders AS
    SELECT customer_id, argMin(order_id, order_at) AS order_id, min(order_at) AS first_order_at
    FROM orders FINAL
    GROUP BY customer_id
    """,
    """
    CREATE OR REPLACE VIEW credit_facts AS
    SELECT c.order_id AS order_id, c.model AS model, c.order_at AS order_at,
           c.customer_id AS customer_id, c.influencer_id AS influencer_id,
           c.campaign_id AS campaign_id, c.tier AS tier, c.platform AS platform,
           ifNull(k.category, '') AS category, c.currency AS currency,
           c.credit AS credit, c.revenue_credit AS revenue_credit,
           o.total AS order_total, o.refunded AS order_refunded,
           c.order_id IN (SELECT order_id FROM first_orders) AS new_customer
    FROM (SELECT * FROM credits FINAL WHERE NOT is_deleted AND influencer_id != '') AS c
    LEFT JOIN (SELECT order_id, total, refunded FROM orders FINAL) AS o ON o.order_id = c.order_id
    LEFT JOIN catalog_campaigns AS k ON k.campaign_id = c.campaign_id
    """,
    f"""
    CREATE OR REPLACE VIEW kpi_daily AS
    SELECT d.day AS day, d.model AS model, d.influencer_id AS influencer_id,
           d.campaign_id AS campaign_id,
           ifNull(i.tier, '') AS tier, ifNull(i.platform, '') AS platform,
           ifNull(k.category, '') AS category,
           d.clicks AS clicks, d.impressions AS impressions, d.likes AS likes,
           d.comments AS comments, d.followers AS followers,
           {ratio("100 * d.clicks", "d.impressions", 4)} AS ctr,
           {ratio("100 * (d.likes + d.comments)", "d.followers", 4)} AS engagement_rate,
           {CONVERSION_COLUMNS}
    FROM (
        SELECT day, model, influencer_id, campaign_id,
               sum(n_click) AS clicks, sum(n_impression) AS impressions, sum(n_like) AS likes,
               sum(n_comment) AS comments, sum(n_follower) AS followers,
               sum(credit) AS credited_conversions, sum(revenue) AS credited_revenue,
               sum(gross) AS gross_revenue, sum(refund) AS refunded,
               sum(new_customer) AS new_customers
        FROM (
            SELECT toDate(order_at) AS day, model, influencer_id, campaign_id,
                   0 AS n_click, 0 AS n_impression, 0 AS n_like, 0 AS n_comment, 0 AS n_follower,
                   credit, toDecimal128(revenue_credit, 4) AS revenue,
                   toDecimal128(credit * order_total, 4) AS gross,
                   toDecimal128(credit * order_refunded, 4) AS refund,
                   if(new_customer, credit, toDecimal128(0, 18)) AS new_customer
            FROM credit_facts
            UNION ALL
            SELECT toDate(occurred_at), model, influencer_id, campaign_id, 1, 0, 0, 0, 0,
                   toDecimal128(0, 18), toDecimal128(0, 4), toDecimal128(0, 4),
                   toDecimal128(0, 4), toDecimal128(0, 18)
            FROM clicks FINAL ARRAY JOIN {MODELS_ARRAY} AS model
            WHERE influencer_id != ''
            UNION ALL
            SELECT toDate(occurred_at), model, influencer_id, campaign_id, 0, impressions,
                   likes, comments, followers,
                   toDecimal128(0, 18), toDecimal128(0, 4), toDecimal128(0, 4),
                   toDecimal128(0, 4), toDecimal128(0, 18)
            FROM content_metrics FINAL ARRAY JOIN {MODELS_ARRAY} AS model
        )
        GROUP BY day, model, influencer_id, campaign_id
    ) AS d
    LEFT JOIN catalog_influencers AS i ON i.influencer_id = d.influencer_id
    LEFT JOIN catalog_campaigns AS k ON k.campaign_id = d.campaign_id
    """,
    # Spend per contract: fees per post x posts + retainer + commission on the credited revenue
    # of the contract's commission model (last click unless it names another) + the bonus once
    # its metric, under that model, exceeds its threshold (conversion_rate in percent,
    # conversions, revenue or clicks; any other metric never pays).
    f"""
    CREATE OR REPLACE VIEW contract_spend AS
    SELECT t.influencer_id AS influencer_id, t.campaign_id AS campaign_id,
           ifNull(k.currency, '') AS currency,
           t.fee_per_post * t.posts AS post_fees, t.retainer AS retainer,
           toDecimal128(t.commission_rate * p.credited_revenue, 4) AS commission,
           t.commission_model AS commission_model,
           p.clicks AS clicks, p.credited_conversions AS credited_conversions,
           p.credited_revenue AS credited_revenue,
           multiIf(
               t.bonus_metric = 'conversion_rate',
               ifNull({ratio("100 * p.credited_conversions", "p.clicks")}, 0) > t.bonus_threshold,
               t.bonus_metric = 'conversions', p.credited_conversions > t.bonus_threshold,
               t.bonus_metric = 'revenue', p.credited_revenue > t.bonus_threshold,
               t.bonus_metric = 'clicks', p.clicks > t.bonus_threshold,
               false
           ) AS bonus_earned,
           if(bonus_earned, t.bonus_amount, toDecimal128(0, 4)) AS bonus,
           toDecimal128(post_fees + retainer + commission + bonus, 4) AS spend
    FROM catalog_contracts AS t
    LEFT JOIN (
        SELECT influencer_id, campaign_id, model, sum(clicks) AS clicks,
               sum(credited_conversions) AS credited_conversions,
               sum(credited_revenue) AS credited_revenue
        FROM kpi_daily
        GROUP BY influencer_id, campaign_id, model
    ) AS p ON p.influencer_id = t.influencer_id AND p.campaign_id = t.campaign_id
        AND p.model = t.commission_model
    LEFT JOIN catalog_campaigns AS k ON k.campaign_id = t.campaign_id
    """,
    """
    CREATE OR REPLACE VIEW payouts AS
    SELECT influencer_id, currency, sum(post_fees) AS post_fees, sum(retainer) AS retainers,
           sum(commission) AS commissions, sum(bonus) AS bonuses, sum(spend) AS payout
    FROM contract_spend
    GROUP BY influencer_id, currency
    """,
    f"""
    CREATE OR REPLACE VIEW campaign_kpis AS
    SELECT d.campaign_id AS campaign_id, d.model AS model, d.category AS category,
           d.clicks AS clicks, d.impressions AS impressions,
           {CONVERSION_COLUMNS},
           ifNull(s.spend, toDecimal128(0, 4)) AS spend,
           {ratio("d.credited_revenue", "spend", 4)} AS roas,
           {ratio("spend", "d.new_customers", 4)} AS cac,
           ifNull(m.margin, toDecimal64({DEFAULT_MARGIN}, 6)) AS margin,
           toDecimal128(d.credited_revenue * margin - spend, 4) AS net_profit,
           {ratio("net_profit", "spend", 4)} AS roi
    FROM (
        SELECT campaign_id, model, any(category) AS category, sum(clicks) AS clicks,
               sum(impressions) AS impressions, sum(credited_conversions) AS credited_conversions,
               sum(credited_revenue) AS credited_revenue, sum(gross_revenue) AS gross_revenue,
               sum(refunded) AS refunded, sum(new_customers) AS new_customers
        FROM kpi_daily GROUP BY campaign_id, model
    ) AS d
    LEFT JOIN (SELECT campaign_id, sum(spend) AS spend FROM contract_spend GROUP BY campaign_id)
        AS s ON s.campaign_id = d.campaign_id
    LEFT JOIN (SELECT category, margin FROM category_margins FINAL) AS m
        ON m.category = d.category
    """,
    """
    CREATE OR REPLACE VIEW campaign_benchmark_flags AS
    SELECT c.campaign_id AS campaign_id, c.category AS category, c.clicks AS clicks,
           c.conversion_rate AS conversion_rate, b.conversion_rate_low AS conversion_rate_low,
           b.conversion_rate_high AS conversion_rate_high, c.aov AS aov,
           b.aov_low AS aov_low, b.aov_high AS aov_high,
           c.conversion_rate < b.conversion_rate_low AS conversion_rate_below,
           c.aov < b.aov_low AS aov_below
    FROM campaign_kpis AS c
    INNER JOIN (SELECT * FROM category_benchmarks FINAL) AS b ON b.category = c.category
    WHERE c.model = 'last_click' AND (conversion_rate_below OR aov_below)
    """,
    f"""
    CREATE OR REPLACE VIEW customer_kpis AS
    SELECT count() AS customers, countIf(orders >= 2) AS repeat_customers,
           {ratio("repeat_customers", "customers")} AS repeat_purchase_rate,
           sum(orders) AS orders_count, sum(net_revenue) AS net_revenue,
           {ratio("net_revenue", "orders_count", 4)} AS aov,
           {ratio("orders_count", "customers", 4)} AS purchase_frequency,
           toDecimal128(aov * purchase_frequency * repeat_purchase_rate, 4) AS ltv
    FROM (
        SELECT customer_id, count() AS orders, sum(net_revenue) AS net_revenue
        FROM orders FINAL GROUP BY customer_id
    )
    """,
)

ORDER_ITEMS = (
    """
    CREATE TABLE IF NOT EXISTS order_items (
        order_id String,
        line UInt32,
        order_at DateTime64(6, 'UTC'),
        sku String,
        category LowCardinality(String),
        quantity UInt32,
        unit_price Decimal(38, 4),
        currency LowCardinality(String)
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(order_at)
    ORDER BY (order_id, line)
    """,
)

# Data dirs created before migrations existed have no commission_model column yet.
CONTRACT_MODEL = (
    "ALTER TABLE dim_contracts ADD COLUMN IF NOT EXISTS "
    "commission_model LowCardinality(String) DEFAULT 'last_click'",
    catalog_view("contracts", "CREATE OR REPLACE VIEW"),
)

# Data dirs older than this keep raw-free clicks; the hashes are new columns there.
CLICK_HASHES = (
    "ALTER TABLE clicks ADD COLUMN IF NOT EXISTS ip_hash String DEFAULT ''",
    "ALTER TABLE clicks ADD COLUMN IF NOT EXISTS user_agent_hash String DEFAULT ''",
)

# When each `attribution erase` was applied; the customer id itself is nowhere.
ERASURES = (
    """
    CREATE TABLE IF NOT EXISTS erasures (
        pseudonym String,
        visitors UInt32,
        erased_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree ORDER BY pseudonym
    """,
)

# Refunds are judged again whenever one arrives (an accepted refund is refused when an earlier
# one arrives late and the two exceed the total), so each decision is versioned; `refunds`
# becomes the view of the accepted ones, with the rows the table held before.
REFUND_DECISIONS = (
    """
    CREATE TABLE IF NOT EXISTS refund_decisions (
        event_id String,
        order_id String,
        refunded_at DateTime64(6, 'UTC'),
        amount Decimal(38, 4),
        currency LowCardinality(String),
        reason String,
        status LowCardinality(String),
        version UInt64
    ) ENGINE = ReplacingMergeTree(version)
    PARTITION BY toYYYYMM(refunded_at)
    ORDER BY (order_id, event_id)
    """,
    """
    INSERT INTO refund_decisions
    SELECT event_id, order_id, refunded_at, amount, currency, reason, 'accepted', 0
    FROM refunds FINAL
    """,
    "DROP TABLE IF EXISTS refunds",
    """
    CREATE OR REPLACE VIEW refunds AS
    SELECT event_id, order_id, refunded_at, amount, currency, reason
    FROM refund_decisions FINAL WHERE status = 'accepted'
    """,
)

# Which code-vs-link policy decided each credit, and the campaigns that override the program's.
CODE_POLICIES = (
    "ALTER TABLE credits ADD COLUMN IF NOT EXISTS code_policy LowCardinality(String) DEFAULT ''",
    "ALTER TABLE dim_campaigns ADD COLUMN IF NOT EXISTS "
    "code_policy LowCardinality(String) DEFAULT ''",
    catalog_view("campaigns", "CREATE OR REPLACE VIEW"),
)


def _view(views: tuple[str, ...], name: str) -> str:
    return next(view for view in views if f"VIEW {name} AS" in view)


def _rewritten(view: str, replacements: tuple[tuple[str, str], ...]) -> str:
    """A later migration's version of a view: its earlier text with these parts replaced (a
    part that is not there is a mistake in this file, caught when it is imported)."""
    for old, new in replacements:
        if old not in view:
            raise ValueError(f"not in the view: {old!r}")
        view = view.replace(old, new)
    return view


def _contract_spend_in_reporting_currency(views: tuple[str, ...]) -> str:
    """`contract_spend` with contract money converted at its campaign's start rate."""
    return _rewritten(
        _view(views, "contract_spend"),
        (
            (
                "ifNull(k.currency, '') AS currency,\n"
                "           t.fee_per_post * t.posts AS post_fees, t.retainer AS retainer,",
                "x.reporting_currency AS currency,\n"
                "           toDecimal128(t.fee_per_post * t.posts * x.rate, 4) AS post_fees,\n"
                "           toDecimal128(t.retainer * x.rate, 4) AS retainer,",
            ),
            (
                "p.credited_revenue > t.bonus_threshold,",
                "p.credited_revenue > t.bonus_threshold * x.rate,",
            ),
            (
                "if(bonus_earned, t.bonus_amount, toDecimal128(0, 4)) AS bonus,",
                "if(bonus_earned, toDecimal128(t.bonus_amount * x.rate, 4), toDecimal128(0, 4))"
                " AS bonus,",
            ),
            (
                "LEFT JOIN catalog_campaigns AS k ON k.campaign_id = t.campaign_id",
                "INNER JOIN campaign_fx AS x ON x.campaign_id = t.campaign_id",
            ),
        ),
    )


def _with_invalid_clicks(views: tuple[str, ...]) -> tuple[str, str]:
    """`kpi_daily` and `campaign_kpis` counting valid clicks (what CTR and conversion rate
    divide by) with invalid clicks beside them, from the click classifications."""
    replacements = (
        ("d.clicks AS clicks,", "d.clicks AS clicks, d.invalid_clicks AS invalid_clicks,"),
        ("sum(n_click) AS clicks,", "sum(n_click) AS clicks, sum(n_invalid) AS invalid_clicks,"),
        ("0 AS n_click, 0 AS n_impression,", "0 AS n_click, 0 AS n_invalid, 0 AS n_impression,"),
        (
            "model, influencer_id, campaign_id, 1, 0, 0, 0, 0,",
            "model, influencer_id, campaign_id, status != 'invalid', status = 'invalid', "
            "0, 0, 0, 0,",
        ),
        (
            "FROM clicks FINAL ARRAY JOIN",
            "FROM (SELECT c.*, k.status AS status FROM (SELECT * FROM clicks FINAL) AS c "
            "LEFT JOIN (SELECT event_id, status FROM click_classifications FINAL) AS k "
            "ON k.event_id = c.event_id) ARRAY JOIN",
        ),
        ("campaign_id, 0, impressions,", "campaign_id, 0, 0, impressions,"),
    )
    campaign = (
        ("d.clicks AS clicks,", "d.clicks AS clicks, d.invalid_clicks AS invalid_clicks,"),
        ("sum(clicks) AS clicks,", "sum(clicks) AS clicks, sum(invalid_clicks) AS invalid_clicks,"),
    )
    return (
        _rewritten(_view(views, "kpi_daily"), replacements),
        _rewritten(_view(views, "campaign_kpis"), campaign),
    )


# Many currencies, one report: orders and credits carry their amounts in the reporting currency at
# the rate locked for the order; contract money converts at the rate of its campaign's start.
REPORTING_CURRENCY = (
    *(
        f"ALTER TABLE credits ADD COLUMN IF NOT EXISTS {column}"
        for column in (
            "reporting_currency LowCardinality(String) DEFAULT ''",
            "reporting_revenue_credit Decimal(38, 4) DEFAULT 0",
            "fx_rate Decimal(38, 20) DEFAULT 0",
            "fx_rate_date Nullable(Date)",
        )
    ),
    *(
        f"ALTER TABLE orders ADD COLUMN IF NOT EXISTS {column}"
        for column in (
            "reporting_currency LowCardinality(String) DEFAULT ''",
            "reporting_total Decimal(38, 4) DEFAULT 0",
            "reporting_refunded Decimal(38, 4) DEFAULT 0",
            "reporting_net_revenue Decimal(38, 4) DEFAULT 0",
            "fx_rate Decimal(38, 20) DEFAULT 0",
            "fx_rate_date Nullable(Date)",
        )
    ),
    """
    CREATE TABLE IF NOT EXISTS fx_rates (
        currency LowCardinality(String),
        published_on Date,
        rate Decimal(38, 20),
        reporting_currency LowCardinality(String),
        written_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(written_at) ORDER BY (currency, published_on)
    """,
    """
    CREATE OR REPLACE VIEW orders_missing_fx_rate AS
    SELECT order_id, customer_id, order_at, currency, total, net_revenue
    FROM orders FINAL WHERE reporting_currency = ''
    """,
    # A campaign's rate is locked like an order's (attribution/fx.py): the last publication on or
    # before its first day, at most 7 days before it, once a publication on or after that day
    # is known; a campaign in the reporting currency converts at 1 whatever the rates.
    """
    CREATE OR REPLACE VIEW campaign_fx AS
    WITH (SELECT any(reporting_currency) FROM fx_rates) AS reporting,
         (SELECT max(published_on) FROM fx_rates) AS last_published
    SELECT campaign_id, currency, reporting AS reporting_currency,
           toDecimal128(1, 20) AS rate, toDate(starts_at) AS published_on
    FROM catalog_campaigns WHERE currency = reporting
    UNION ALL
    SELECT k.campaign_id, k.currency, r.reporting_currency, r.rate, r.published_on
    FROM (SELECT * FROM catalog_campaigns WHERE currency != reporting) AS k
    ASOF INNER JOIN (SELECT * FROM fx_rates FINAL) AS r
        ON r.currency = k.currency AND toDate(k.starts_at) >= r.published_on
    WHERE r.published_on >= toDate(k.starts_at) - 7 AND toDate(k.starts_at) <= last_published
    """,
    """
    CREATE OR REPLACE VIEW credit_facts AS
    SELECT c.order_id AS order_id, c.model AS model, c.order_at AS order_at,
           c.customer_id AS customer_id, c.influencer_id AS influencer_id,
           c.campaign_id AS campaign_id, c.tier AS tier, c.platform AS platform,
           ifNull(k.category, '') AS category, c.reporting_currency AS currency,
           c.credit AS credit, c.reporting_revenue_credit AS revenue_credit,
           c.currency AS order_currency, c.revenue_credit AS order_revenue_credit,
           o.reporting_total AS order_total, o.reporting_refunded AS order_refunded,
           c.order_id IN (SELECT order_id FROM first_orders) AS new_customer
    FROM (
        SELECT * FROM credits FINAL
        WHERE NOT is_deleted AND influencer_id != '' AND reporting_currency != ''
    ) AS c
    LEFT JOIN (SELECT order_id, reporting_total, reporting_refunded FROM orders FINAL) AS o
        ON o.order_id = c.order_id
    LEFT JOIN catalog_campaigns AS k ON k.campaign_id = c.campaign_id
    """,
    _contract_spend_in_reporting_currency(KPI_VIEWS),
)


# Every influencer click classified (attribution/traffic.py): valid, suspicious or invalid with
# its reasons, versioned (a late click reclassifies its neighbours).
CLICK_CLASSIFICATIONS = (
    """
    CREATE TABLE IF NOT EXISTS click_classifications (
        event_id String,
        occurred_at DateTime64(6, 'UTC'),
        influencer_id String,
        campaign_id String,
        status LowCardinality(String),
        reasons Array(LowCardinality(String)),
        rule_version UInt16,
        version UInt64
    ) ENGINE = ReplacingMergeTree(version)
    PARTITION BY toYYYYMM(occurred_at)
    ORDER BY event_id
    """,
    # The clicks with their classification, for analysts: the classification is its own table
    # because a late click can reclassify a stored one (versions), which `clicks` does not keep.
    """
    CREATE OR REPLACE VIEW classified_clicks AS
    SELECT c.event_id AS event_id, c.occurred_at AS occurred_at, c.visitor_id AS visitor_id,
           c.customer_id AS customer_id, c.influencer_id AS influencer_id,
           c.campaign_id AS campaign_id, c.platform AS platform, c.tier AS tier,
           c.link_id AS link_id, if(k.status = '', 'valid', k.status) AS status,
           k.reasons AS reasons, k.rule_version AS rule_version
    FROM (SELECT * FROM clicks FINAL WHERE influencer_id != '') AS c
    LEFT JOIN (SELECT event_id, status, reasons, rule_version FROM click_classifications FINAL)
        AS k ON k.event_id = c.event_id
    """,
    "ALTER TABLE credits ADD COLUMN IF NOT EXISTS "
    "touchpoint_flags Array(LowCardinality(String)) DEFAULT []",
    "ALTER TABLE dim_codes ADD COLUMN IF NOT EXISTS "
    "credit_policy LowCardinality(String) DEFAULT 'always'",
    catalog_view("codes", "CREATE OR REPLACE VIEW"),
    # A click without a classification (stored before this migration) counts as valid.
    *_with_invalid_clicks(KPI_VIEWS),
)

# Data-driven models (docs/models.md): every journey's path, the weights learned from the paths,
# versioned, and the weights version each `markov` and `shapley` credit row was split by.
DATA_DRIVEN = (
    """
    CREATE TABLE IF NOT EXISTS journey_paths (
        path_id String,
        identity String,
        converted UInt8,
        order_id String,
        influencers Array(String),
        campaigns Array(String),
        platforms Array(LowCardinality(String)),
        touched_at Array(DateTime64(6, 'UTC')),
        ended_at DateTime64(6, 'UTC'),
        version UInt64,
        -- Converting paths: when the order's linear rows were stored (where a restarted worker
        -- resumes crediting orders); 0 for the others.
        linear_written_at DateTime64(3, 'UTC') DEFAULT 0,
        written_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(version)
    PARTITION BY toYYYYMM(ended_at)
    ORDER BY path_id
    """,
    """
    CREATE TABLE IF NOT EXISTS model_weights (
        version UInt32,
        model LowCardinality(String),
        influencer_id String,
        weight Decimal(38, 18),
        window_start DateTime64(6, 'UTC'),
        window_end DateTime64(6, 'UTC'),
        computed_at DateTime64(3, 'UTC'),
        paths UInt64
    ) ENGINE = ReplacingMergeTree ORDER BY (version, model, influencer_id)
    """,
    "ALTER TABLE credits ADD COLUMN IF NOT EXISTS weights_version UInt32 DEFAULT 0",
    # The orders pass reads the credit rows written since its last tick: without the index it
    # would read every part of the table each tick.
    "ALTER TABLE credits ADD INDEX IF NOT EXISTS credits_written_at written_at TYPE minmax",
    "ALTER TABLE credits MATERIALIZE INDEX credits_written_at",
)

# Clicks and content metrics count under every model, the data-driven ones too, so conversion
# rates and CTR exist for them.
KPI_VIEWS_WITH_DATA_DRIVEN_MODELS = (
    _rewritten(
        _with_invalid_clicks(KPI_VIEWS)[0],
        ((f"ARRAY JOIN {MODELS_ARRAY} AS model", f"ARRAY JOIN {ALL_MODELS_ARRAY} AS model"),),
    ),
)

# Every settings version the history was attributed under (`attribution restate`): its rules as
# JSON, when it started and stopped ruling, the tables holding its credits and orders now, and its
# state: 'active' (the one `credits` and `orders` hold), 'kept' (replaced, its tables renamed),
# 'pending' (a restate in progress: the tables named are its staging tables) or 'rolled back'.
SETTINGS_VERSIONS = (
    """
    CREATE TABLE IF NOT EXISTS settings_versions (
        version UInt32,
        settings String,
        ruled_from DateTime64(3, 'UTC'),
        ruled_to Nullable(DateTime64(3, 'UTC')),
        credits_table String,
        orders_table String,
        state LowCardinality(String),
        written_at DateTime64(6, 'UTC') DEFAULT now64(6)
    ) ENGINE = ReplacingMergeTree(written_at) ORDER BY version
    """,
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "raw events, credits, catalog dimensions", SCHEMA),
    Migration(2, "contracts name the model their commission is paid on", CONTRACT_MODEL),
    Migration(3, "category benchmarks and margins", REFERENCE_TABLES),
    Migration(4, "order items", ORDER_ITEMS),
    Migration(5, "KPI views, spend, payouts, benchmark flags", KPI_VIEWS),
    Migration(6, "keyed hashes of click IP addresses and user agents", CLICK_HASHES),
    Migration(7, "erasures of customers' personal data", ERASURES),
    Migration(
        8, "refund decisions, versioned; refunds is the view of the accepted", REFUND_DECISIONS
    ),
    Migration(9, "payout statements of closed periods", PAYOUT_TABLES),
    Migration(10, "code-vs-link policy of each credit and campaign", CODE_POLICIES),
    Migration(11, "reporting currency: amounts at locked rates, FX rates", REPORTING_CURRENCY),
    Migration(12, "leak signals of promo codes, authenticity of creators", FRAUD_VIEWS),
    Migration(
        13,
        "click classifications, KPI views count valid clicks; codes' credit policy",
        CLICK_CLASSIFICATIONS,
    ),
    Migration(14, "journey paths, model weights, weights version of credits", DATA_DRIVEN),
    Migration(
        15,
        "KPI views count clicks under the data-driven models",
        (*KPI_VIEWS_WITH_DATA_DRIVEN_MODELS,),
    ),
    Migration(16, "settings versions of restated histories", SETTINGS_VERSIONS),
)


def migrate(client: Client) -> list[int]:
    """Apply the migrations not yet recorded; return the versions applied now."""
    client.command(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version UInt32,
            name String,
            applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
        ) ENGINE = ReplacingMergeTree ORDER BY version
        """
    )
    applied = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    newly_applied = []
    for migration in MIGRATIONS:
        if migration.version in applied:
            continue
        for statement in migration.statements:
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name]],
            column_names=["version", "name"],
        )
        newly_applied.append(migration.version)
    return newly_applied
