"""ClickHouse views that flag leaked promo codes and inflated creators (docs/fraud.md).

Both are advice for whoever reviews a program: they read the final state (FINAL, deletions
dropped) and never change a credit. Every threshold below is a default documented, with its
reason, in docs/fraud.md; the alert `PromoCodeLikelyLeaked` (deploy/prometheus/alerts.yml) uses
the same three leak thresholds on the gauges read from `code_leak_signals`.

Spikes and jumps are robust z-scores: (x - median) / (MAD_TO_SIGMA x MAD). When more than half the
values are equal the MAD is 0; the scale is then floored at MIN_ROBUST_SCALE, one unit of the count
(a redemption, a follower), the smallest change a count can show.
"""

from __future__ import annotations

from decimal import Decimal

# MAD x 1.4826 estimates the standard deviation of normally distributed values (1.4826 is
# 1 / the 75th percentile of the standard normal), so a robust z-score reads like a z-score.
MAD_TO_SIGMA = Decimal("1.4826")
MIN_ROBUST_SCALE = 1

LEAK_TRAILING_DAYS = 28
LEAK_MIN_REDEMPTIONS = 20
LEAK_MIN_NO_CLICK_SHARE = Decimal("0.8")
LEAK_MIN_SPIKE_SCORE = 4

AUTHENTICITY_WINDOW_DAYS = 60
PEER_LOW_RATIO = Decimal("0.25")
PEER_HIGH_RATIO = 4
# Iglewicz and Hoaglin's cut-off for an outlying modified z-score.
FOLLOWER_JUMP_MIN_SCORE = Decimal("3.5")
FOLLOWER_JUMP_MIN_PER_DAY = 1000

# What each reason takes off a creator's score of 100, the surest sign of inflation first.
REASON_PENALTIES = {
    "engagement_below_tier": 40,
    "follower_jump": 30,
    "engagement_above_tier": 20,
    "likes_to_comments_outlier": 10,
}

# The guide's engagement rates in percent: its "healthy" ranges for macro (2-5%) and micro
# (5-10%), and its ranges of the nano (5-15%) and mega (1-3%) tiers.
TIER_ENGAGEMENT_RANGES = {
    "nano": (5, 15),
    "micro": (5, 10),
    "macro": (2, 5),
    "mega": (1, 3),
}


def share(numerator: str, denominator: str, scale: int = 6) -> str:
    """SQL for numerator / denominator as a decimal of `scale` digits, NULL when dividing by 0
    (the convention of the KPI views)."""
    return (
        f"if(({denominator}) = 0, NULL, divideDecimal(toDecimal128({numerator}, 18), "
        f"toDecimal128(if(({denominator}) = 0, 1, {denominator}), 18), {scale}))"
    )


def median(values: str) -> str:
    """SQL for the median of an array (the mean of the middle two of an even count)."""
    return f"arrayReduce('quantileExactInclusive(0.5)', {values})"


def versus(value: str, peers: str) -> str:
    """SQL for value / peers' median (a Float64 of 4 digits), NULL when the median is 0."""
    return f"if(({peers}) = 0, NULL, round(toFloat64({value}) / ({peers}), 4))"


def robust_scale(values: str, center: str) -> str:
    """SQL for MAD_TO_SIGMA x the median absolute deviation of `values` around `center`,
    floored at MIN_ROBUST_SCALE."""
    deviations = f"arrayMap(value -> abs(value - {center}), {values})"
    return f"greatest({MAD_TO_SIGMA} * {median(deviations)}, {MIN_ROBUST_SCALE})"


TIER_ENGAGEMENT_TABLE = (
    """
    CREATE TABLE IF NOT EXISTS tier_engagement_ranges (
        tier LowCardinality(String),
        engagement_rate_low Decimal(9, 4),
        engagement_rate_high Decimal(9, 4)
    ) ENGINE = ReplacingMergeTree ORDER BY tier
    """,
    "INSERT INTO tier_engagement_ranges VALUES "
    + ", ".join(
        f"('{tier}', {low}, {high})" for tier, (low, high) in TIER_ENGAGEMENT_RANGES.items()
    ),
)


def code_leak_select(on_day: str | None = None) -> str:
    """The SELECT of `code_leak_signals`: every code and day, or only the SQL date `on_day`,
    reading only the redemptions (and their orders' credits) that day's figures need."""
    days = "" if on_day is None else f"AND toDate(occurred_at) = {on_day}"
    trailing_days = (
        ""
        if on_day is None
        else f"AND toDate(occurred_at) BETWEEN {on_day} - {LEAK_TRAILING_DAYS} AND {on_day}"
    )
    redeemed = f"SELECT order_id FROM code_redemptions WHERE known_code {days}"
    # New customers: each customer's first order, as in the view first_orders, for the customers
    # of the redeemed orders only.
    #
    # A redemption "has a click of the owner" when its order is credited, under any model, to a
    # click touchpoint of the code's influencer: the order's eligible clicks (lookback,
    # restatement window) are exactly its click touchpoints, and each has a linear credit. Orders
    # decided by `code_wins` keep only their code touchpoint, so their clicks are unknown: they
    # are left out of the share, as are redemptions whose order has not arrived yet.
    return f"""
    SELECT d.day AS day, d.code AS code, d.influencer_id AS influencer_id,
           d.campaign_id AS campaign_id, d.redemptions AS redemptions,
           d.ordered AS ordered_redemptions, d.new_customers AS new_customer_redemptions,
           {share("d.new_customers", "d.ordered")} AS new_customer_share,
           d.click_checked AS click_checked_redemptions, d.no_click AS no_click_redemptions,
           {share("d.no_click", "d.click_checked")} AS no_click_share,
           arrayMap(
               days_before -> h.daily[d.day - days_before], range(1, {LEAK_TRAILING_DAYS + 1})
           ) AS trailing_redemptions,
           {median("trailing_redemptions")} AS trailing_median,
           round(
               (d.redemptions - trailing_median)
                   / {robust_scale("trailing_redemptions", "trailing_median")},
               4
           ) AS spike_score,
           d.redemptions >= {LEAK_MIN_REDEMPTIONS}
               AND ifNull(no_click_share >= {LEAK_MIN_NO_CLICK_SHARE}, false)
               AND spike_score >= {LEAK_MIN_SPIKE_SCORE} AS likely_leaked
    FROM (
        SELECT toDate(r.occurred_at) AS day, r.code AS code, r.influencer_id AS influencer_id,
               r.campaign_id AS campaign_id,
               uniqExact(r.order_id) AS redemptions,
               uniqExactIf(r.order_id, o.stored) AS ordered,
               uniqExactIf(r.order_id, o.first_order) AS new_customers,
               uniqExactIf(r.order_id, c.credited AND NOT c.code_wins) AS click_checked,
               uniqExactIf(
                   r.order_id,
                   c.credited AND NOT c.code_wins AND NOT has(c.click_owners, r.influencer_id)
               ) AS no_click
        FROM (
            SELECT order_id, occurred_at, code, influencer_id, campaign_id
            FROM code_redemptions FINAL WHERE known_code {days}
        ) AS r
        LEFT JOIN (
            SELECT order_id, true AS stored, order_id IN (
                       SELECT argMin(order_id, order_at) FROM orders FINAL
                       WHERE customer_id IN (
                           SELECT customer_id FROM orders FINAL WHERE order_id IN ({redeemed})
                       )
                       GROUP BY customer_id
                   ) AS first_order
            FROM orders FINAL
            WHERE order_id IN ({redeemed})
        ) AS o ON o.order_id = r.order_id
        LEFT JOIN (
            SELECT order_id, true AS credited,
                   max(code_policy = 'code_wins' AND touchpoint_type = 'code') AS code_wins,
                   groupUniqArrayIf(influencer_id, touchpoint_type = 'click') AS click_owners
            FROM credits FINAL
            WHERE NOT is_deleted AND order_id IN ({redeemed})
            GROUP BY order_id
        ) AS c ON c.order_id = r.order_id
        GROUP BY day, code, influencer_id, campaign_id
    ) AS d
    LEFT JOIN (
        SELECT code, mapFromArrays(groupArray(day), groupArray(orders)) AS daily
        FROM (
            SELECT code, toDate(occurred_at) AS day, uniqExact(order_id) AS orders
            FROM code_redemptions FINAL WHERE known_code {trailing_days}
            GROUP BY code, day
        )
        GROUP BY code
    ) AS h ON h.code = d.code
    """


CODE_LEAK_SIGNALS = f"CREATE OR REPLACE VIEW code_leak_signals AS {code_leak_select()}"

# Each creator's posts whose newest snapshot was taken in the window.
_RECENT_POSTS = f"""
    SELECT influencer_id, occurred_at, likes, comments, followers
    FROM content_metrics FINAL
    WHERE occurred_at >= now64(6) - INTERVAL {AUTHENTICITY_WINDOW_DAYS} DAY
"""

# Follower changes per day between consecutive days with snapshots (the newest follower count of
# each day), and whether that day's engagement rate fell: new followers who never like or comment.
_FOLLOWER_CHANGES = f"""
    SELECT influencer_id,
           groupArray(
               (toInt64(day_followers) - toInt64(previous_followers))
                   / dateDiff('day', previous_day, day)
           ) AS changes,
           groupArray(day_rate < previous_rate) AS engagement_fell
    FROM (
        SELECT influencer_id, day, day_followers, day_rate,
               lagInFrame(day_followers) OVER by_day AS previous_followers,
               lagInFrame(day) OVER by_day AS previous_day,
               lagInFrame(day_rate) OVER by_day AS previous_rate,
               row_number() OVER by_day AS nth_day
        FROM (
            SELECT influencer_id, toDate(occurred_at) AS day,
                   argMax(followers, occurred_at) AS day_followers,
                   if(sum(followers) = 0, 0, (sum(likes) + sum(comments)) / sum(followers))
                       AS day_rate
            FROM ({_RECENT_POSTS})
            GROUP BY influencer_id, day
        )
        WINDOW by_day AS (
            PARTITION BY influencer_id ORDER BY day ROWS BETWEEN 1 PRECEDING AND CURRENT ROW
        )
    )
    WHERE nth_day > 1
    GROUP BY influencer_id
"""

_FOLLOWER_SCALE = robust_scale("s.changes", "follower_change_median")

_PENALTIES = " + ".join(f"{points} * {reason}" for reason, points in REASON_PENALTIES.items())

_REASONS = ", ".join(f"if({reason}, '{reason}', '')" for reason in REASON_PENALTIES)

CREATOR_AUTHENTICITY = f"""
    CREATE OR REPLACE VIEW creator_authenticity AS
    SELECT *,
           ifNull(engagement_vs_tier < {PEER_LOW_RATIO}, false) AS engagement_below_tier,
           ifNull(engagement_vs_tier > {PEER_HIGH_RATIO}, false) AS engagement_above_tier,
           follower_jumps > 0 AS follower_jump,
           ifNull(
               likes_per_comment_vs_tier < {PEER_LOW_RATIO}
                   OR likes_per_comment_vs_tier > {PEER_HIGH_RATIO},
               false
           ) AS likes_to_comments_outlier,
           toUInt8(greatest(0, 100 - ({_PENALTIES}))) AS score,
           arrayFilter(reason -> reason != '', [{_REASONS}]) AS reasons
    FROM (
        SELECT *,
               round(
                   quantileExactInclusive(0.5)(toFloat64(engagement_rate)) OVER tier_peers, 4
               ) AS tier_median_engagement_rate,
               round(
                   quantileExactInclusive(0.5)(toFloat64(likes_per_comment)) OVER tier_peers, 4
               ) AS tier_median_likes_per_comment,
               count() OVER tier_peers AS tier_creators,
               {versus("engagement_rate", "tier_median_engagement_rate")} AS engagement_vs_tier,
               {versus("likes_per_comment", "tier_median_likes_per_comment")}
                   AS likes_per_comment_vs_tier
        FROM (
            SELECT m.influencer_id AS influencer_id,
                   if(i.influencer_id = '', 'unknown', i.tier) AS tier,
                   m.posts AS posts, m.newest_followers AS followers, m.total_likes AS likes,
                   m.total_comments AS comments,
                   {share("100 * (likes + comments)", "m.audience", 4)} AS engagement_rate,
                   if(r.tier = '', NULL, r.engagement_rate_low) AS healthy_engagement_rate_low,
                   if(r.tier = '', NULL, r.engagement_rate_high) AS healthy_engagement_rate_high,
                   divideDecimal(
                       toDecimal128(likes, 18), toDecimal128(greatest(comments, 1), 18), 4
                   ) AS likes_per_comment,
                   length(s.changes) AS follower_changes,
                   if(follower_changes = 0, NULL, {median("s.changes")})
                       AS follower_change_median,
                   arrayCount(
                       (change, fell) -> fell
                           AND change >= {FOLLOWER_JUMP_MIN_PER_DAY}
                           AND (change - follower_change_median) / {_FOLLOWER_SCALE}
                               >= {FOLLOWER_JUMP_MIN_SCORE},
                       s.changes, s.engagement_fell
                   ) AS follower_jumps,
                   round(
                       (arrayMax(s.changes) - follower_change_median) / {_FOLLOWER_SCALE}, 4
                   ) AS largest_follower_change_score
            FROM (
                SELECT influencer_id, count() AS posts,
                       argMax(followers, occurred_at) AS newest_followers,
                       sum(likes) AS total_likes, sum(comments) AS total_comments,
                       sum(followers) AS audience
                FROM ({_RECENT_POSTS})
                GROUP BY influencer_id
            ) AS m
            LEFT JOIN catalog_influencers AS i ON i.influencer_id = m.influencer_id
            LEFT JOIN ({_FOLLOWER_CHANGES}) AS s ON s.influencer_id = m.influencer_id
            LEFT JOIN (SELECT * FROM tier_engagement_ranges FINAL) AS r
                ON r.tier = if(i.influencer_id = '', 'unknown', i.tier)
        )
        WINDOW tier_peers AS (PARTITION BY tier)
    )
    """

FRAUD_VIEWS = (*TIER_ENGAGEMENT_TABLE, CODE_LEAK_SIGNALS, CREATOR_AUTHENTICITY)
