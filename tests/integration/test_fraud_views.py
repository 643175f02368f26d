"""The leak signals of promo codes and the authenticity of creators, on the embedded ClickHouse
engine, against hand-made rows and figures computed by hand.

Every row is inserted twice (a full re-delivery), so the figures also prove FINAL-state reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sinks import fraud_views
from sinks.clickhouse import ClickHouseWriter, connect
from sinks.migrations import migrate

pytestmark = pytest.mark.integration

ALERTS = Path(__file__).parents[2] / "deploy" / "prometheus" / "alerts.yml"
DAY = date(2026, 4, 30)
NOW = datetime.now(UTC)


def at(day: date) -> str:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC).isoformat()


def redemption(
    event_id: str, day: date, code: str, order_id: str, owner: str, campaign: str
) -> dict[str, Any]:
    return {
        "table": "code_redemptions",
        "event_id": event_id,
        "occurred_at": at(day),
        "code": code,
        "order_id": order_id,
        "customer_id": "",
        "influencer_id": owner,
        "campaign_id": campaign,
        "known_code": True,
    }


def order(order_id: str, customer_id: str, day: date) -> dict[str, Any]:
    return {
        "table": "orders",
        "order_id": order_id,
        "customer_id": customer_id,
        "order_at": at(day),
        "currency": "USD",
        "total": "40.00",
        "refunded": "0",
        "net_revenue": "40.00",
        "touchpoints": 1,
        "version": 1,
    }


def credit(
    order_id: str,
    touchpoint: str,
    influencer_id: str,
    *,
    version: int = 1,
    deleted: bool = False,
    policy: str = "code_as_last_touch",
) -> dict[str, Any]:
    """A linear credit row of `order_id` to a click (touchpoint 'k...') or a code touchpoint."""
    return {
        "table": "credits",
        "order_id": order_id,
        "model": "linear",
        "touchpoint_event_id": touchpoint,
        "touchpoint_type": "click" if touchpoint.startswith("k") else "code",
        "influencer_id": influencer_id,
        "campaign_id": "spring",
        "credit": "0.5",
        "revenue_credit": "20.00",
        "currency": "USD",
        "order_at": at(DAY),
        "customer_id": "",
        "version": version,
        "is_deleted": deleted,
        "code_policy": "" if deleted else policy,
    }


def leaked_code() -> list[dict[str, Any]]:
    """ANNA10: 2 redemptions a day for the 7 days before DAY, 4 a day the 7 days before those,
    none the 14 days before those, 50 the day before its 28-day window; 25 on DAY."""
    rows = []
    for days_before, count in (
        *((n, 2) for n in range(1, 8)),
        *((n, 4) for n in range(8, 15)),
        (29, 50),
    ):
        for n in range(count):
            order_id = f"h{days_before}-{n}"
            rows.append(
                redemption(
                    order_id, DAY - timedelta(days_before), "ANNA10", order_id, "anna", "spring"
                )
            )
    for n in range(1, 26):
        rows.append(redemption(f"r{n}", DAY, "ANNA10", f"o{n}", "anna", "spring"))
    rows.append(redemption("r1-again", DAY, "ANNA10", "o1", "anna", "spring"))  # same order
    for n in range(1, 25):  # o25 has not arrived
        rows.append(order(f"o{n}", f"c{n}", DAY))
        rows.append(credit(f"o{n}", f"r{n}", "anna"))
    for n in range(21, 25):  # returning customers: their first orders are older
        rows.append(order(f"first-{n}", f"c{n}", DAY - timedelta(40)))
    rows += [credit(f"o{n}", f"k{n}", "anna") for n in (21, 22, 23)]
    rows.append(credit("o24", "k24", "bob"))  # a click, but not of the code's owner
    # o20's click of anna was retracted by a restatement: it no longer counts.
    rows += [credit("o20", "k20", "anna"), credit("o20", "k20", "anna", version=2, deleted=True)]
    return rows


def steady_code() -> list[dict[str, Any]]:
    """CARA15: 20 redemptions every day for 29 days, today's without any click."""
    rows = []
    for days_before in range(29):
        for n in range(20):
            order_id = f"s{days_before}-{n}"
            rows.append(
                redemption(
                    order_id, DAY - timedelta(days_before), "CARA15", order_id, "cara", "gadgets"
                )
            )
            if days_before == 0:
                rows += [order(order_id, order_id, DAY), credit(order_id, order_id, "cara")]
    return rows


def new_code() -> list[dict[str, Any]]:
    """DEV3, first redeemed on DAY: once on an order decided by code_wins, twice after dev's
    clicks."""
    rows = [
        redemption("f1", DAY, "DEV3", "f1", "dev", "spring"),
        order("f1", "d1", DAY),
        credit("f1", "f1", "dev", policy="code_wins"),
    ]
    for n in (2, 3):
        rows += [
            redemption(f"f{n}", DAY, "DEV3", f"f{n}", "dev", "spring"),
            order(f"f{n}", f"d{n}", DAY),
            credit(f"f{n}", f"f{n}", "dev"),
            credit(f"f{n}", f"kf{n}", "dev"),
        ]
    unknown = redemption("u1", DAY, "NOPE", "f3", "", "")
    return [*rows, {**unknown, "known_code": False}]


def post(
    influencer_id: str, post_id: str, days_ago: int, likes: int, comments: int, followers: int
) -> dict[str, Any]:
    return {
        "table": "content_metrics",
        "event_id": f"{influencer_id}-{post_id}",
        "occurred_at": (NOW - timedelta(days=days_ago)).isoformat(),
        "influencer_id": influencer_id,
        "post_id": post_id,
        "platform": "instagram",
        "campaign_id": "",
        "impressions": 0,
        "reach": 0,
        "likes": likes,
        "comments": comments,
        "shares": 0,
        "saves": 0,
        "followers": followers,
    }


def creators() -> list[dict[str, Any]]:
    """Four micro creators (engagement 4%, 5%, 0.5% and 20%), a macro creator whose followers
    jump by 10,120 in a day while her engagement stays flat, a mega creator whose followers
    jump by 20,000 with a viral post, and a creator missing from the catalog."""
    rows = [
        post("anna", "p1", 1, 1_900, 100, 50_000),
        post("anna", "old", 61, 100_000, 100, 50_000),  # outside the 60 days
        post("eve", "p1", 1, 2_400, 100, 50_000),
        post("fay", "p1", 1, 240, 10, 50_000),
        post("hal", "p1", 1, 9_990, 10, 50_000),
        post("zed", "p1", 2, 10, 1, 1_000),
    ]
    ivy = (200_000, 200_080, 200_170, 200_270, 210_390, 210_510)
    rows += [post("ivy", f"p{n}", 6 - n, 5_900, 100, followers) for n, followers in enumerate(ivy)]
    jay = (1_000_000, 1_000_100, 1_000_200, 1_000_300, 1_020_300, 1_020_400)
    rows += [
        post("jay", f"p{n}", 6 - n, 39_600 if n == 4 else 19_800, 400 if n == 4 else 200, followers)
        for n, followers in enumerate(jay)
    ]
    catalog = [
        {"table": "catalog_versions", "catalog_version": 1, "loaded_at": NOW},
        *(
            {
                "table": "dim_influencers",
                "catalog_version": 1,
                "influencer_id": influencer_id,
                "handle": influencer_id,
                "platform": "instagram",
                "followers": followers,
                "tier": tier,
            }
            for influencer_id, followers, tier in (
                ("anna", 45_000, "micro"),
                ("eve", 50_000, "micro"),
                ("fay", 50_000, "micro"),
                ("hal", 50_000, "micro"),
                ("ivy", 200_000, "macro"),
                ("jay", 1_000_000, "mega"),
            )
        ),
    ]
    return rows + catalog


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseWriter]:
    client = connect(f"chdb://{tmp_path_factory.mktemp('fraud') / 'clickhouse'}")
    migrate(client)
    writer = ClickHouseWriter(client)
    rows = [*leaked_code(), *steady_code(), *new_code(), *creators()]
    for _ in range(2):  # the same rows delivered twice
        writer.insert_now(rows)
    yield writer


def leak_signals(engine: ClickHouseWriter, code: str, day: date = DAY) -> dict[str, Any]:
    columns, rows = engine.query(
        "SELECT * FROM code_leak_signals WHERE code = {code:String} AND day = {day:Date}",
        parameters={"code": code, "day": day},
    )
    assert len(rows) == 1, rows
    return dict(zip(columns, rows[0], strict=True))


def test_a_code_redeemed_in_a_burst_without_its_owners_clicks_is_likely_leaked(
    engine: ClickHouseWriter,
) -> None:
    leak = leak_signals(engine, "ANNA10")
    assert (leak["influencer_id"], leak["campaign_id"]) == ("anna", "spring")
    assert leak["redemptions"] == 25  # o1 redeemed twice counts once
    assert leak["ordered_redemptions"] == 24  # o25 has not arrived
    # c21-c24 ordered before: 20 of the 24 orders are first orders.
    assert leak["new_customer_redemptions"] == 20
    assert leak["new_customer_share"] == Decimal("0.833333")
    # o1-o20 have only the code (o20's click was retracted), o24 only bob's click.
    assert leak["click_checked_redemptions"] == 24
    assert leak["no_click_redemptions"] == 21
    assert leak["no_click_share"] == Decimal("0.875")
    # The 28 days before: seven 2s, seven 4s, fourteen 0s (the 50 of day 29 is outside).
    assert leak["trailing_redemptions"] == [2] * 7 + [4] * 7 + [0] * 14
    # Median (0 + 2) / 2 = 1; deviations twenty-one 1s and seven 3s: MAD 1.
    assert leak["trailing_median"] == 1
    assert leak["spike_score"] == 16.1878  # (25 - 1) / (1.4826 x 1)
    assert leak["likely_leaked"] == 1


def test_a_code_redeemed_at_its_usual_rate_does_not_spike(engine: ClickHouseWriter) -> None:
    steady = leak_signals(engine, "CARA15")
    assert (steady["redemptions"], steady["no_click_share"]) == (20, Decimal(1))
    # Median 20 and MAD 0: the scale is floored at one redemption, and 20 is no spike.
    assert (steady["trailing_median"], steady["spike_score"]) == (20, 0)
    assert steady["likely_leaked"] == 0


def test_code_wins_orders_are_left_out_of_the_no_click_share(engine: ClickHouseWriter) -> None:
    new = leak_signals(engine, "DEV3")
    assert (new["redemptions"], new["ordered_redemptions"]) == (3, 3)
    assert new["new_customer_share"] == Decimal(1)
    # f1 was decided by code_wins, which keeps no click: only f2 and f3 are checked.
    assert (new["click_checked_redemptions"], new["no_click_redemptions"]) == (2, 0)
    assert new["no_click_share"] == Decimal(0)
    # No history: median 0, MAD 0, the score is the redemptions above the median.
    assert new["spike_score"] == 3
    assert new["likely_leaked"] == 0


def test_unknown_codes_have_no_leak_signals(engine: ClickHouseWriter) -> None:
    _, rows = engine.query("SELECT DISTINCT code FROM code_leak_signals ORDER BY code")
    assert rows == [["ANNA10"], ["CARA15"], ["DEV3"]]


def test_one_days_signals_read_alone_equal_the_views(engine: ClickHouseWriter) -> None:
    # The worker's gauges read one day without the rest of the history; the figures are the same.
    query = "SELECT * FROM ({}) ORDER BY code"
    _, alone = engine.query(
        query.format(fraud_views.code_leak_select("{day:Date}")), parameters={"day": DAY}
    )
    _, in_view = engine.query(
        query.format("SELECT * FROM code_leak_signals WHERE day = {day:Date}"),
        parameters={"day": DAY},
    )
    assert [row[1] for row in alone] == ["ANNA10", "CARA15", "DEV3"]
    assert alone == in_view


def authenticity(engine: ClickHouseWriter) -> dict[str, dict[str, Any]]:
    columns, rows = engine.query("SELECT * FROM creator_authenticity")
    return {row[0]: dict(zip(columns, row, strict=True)) for row in rows}


def test_creators_far_from_their_tiers_median_are_flagged(engine: ClickHouseWriter) -> None:
    creators = authenticity(engine)
    micro = {name: creators[name] for name in ("anna", "eve", "fay", "hal")}
    assert {name: row["engagement_rate"] for name, row in micro.items()} == {
        "anna": Decimal(4),  # (1,900 + 100) / 50,000 x 100; the post of 61 days ago is left out
        "eve": Decimal(5),
        "fay": Decimal("0.5"),
        "hal": Decimal(20),
    }
    for row in micro.values():
        assert row["tier_creators"] == 4
        assert row["tier_median_engagement_rate"] == 4.5  # (4 + 5) / 2
        assert row["tier_median_likes_per_comment"] == 24  # of 19, 24, 24 and 999
        assert (row["healthy_engagement_rate_low"], row["healthy_engagement_rate_high"]) == (5, 10)
    assert micro["anna"]["posts"] == 1
    assert micro["fay"]["engagement_vs_tier"] == 0.1111  # 0.5 / 4.5, under 0.25x
    assert micro["hal"]["engagement_vs_tier"] == 4.4444  # 20 / 4.5, over 4x
    assert micro["hal"]["likes_per_comment"] == Decimal(999)
    assert micro["hal"]["likes_per_comment_vs_tier"] == 41.625  # 999 / 24
    assert {name: (row["score"], row["reasons"]) for name, row in micro.items()} == {
        "anna": (100, []),
        "eve": (100, []),
        "fay": (60, ["engagement_below_tier"]),
        "hal": (70, ["engagement_above_tier", "likes_to_comments_outlier"]),
    }


def test_a_follower_jump_without_engagement_is_flagged_a_viral_one_is_not(
    engine: ClickHouseWriter,
) -> None:
    creators = authenticity(engine)
    ivy, jay = creators["ivy"], creators["jay"]
    # ivy: changes 80, 90, 100, 10,120, 120 a day: median 100, MAD 20.
    assert ivy["follower_changes"] == 5
    assert ivy["follower_change_median"] == 100
    assert ivy["largest_follower_change_score"] == 337.9199  # (10,120 - 100) / (1.4826 x 20)
    assert ivy["follower_jumps"] == 1
    # 36,000 likes and comments over 1,221,420 followers summed over her six posts.
    assert ivy["engagement_rate"] == Decimal("2.9473")
    assert (ivy["healthy_engagement_rate_low"], ivy["healthy_engagement_rate_high"]) == (2, 5)
    assert (ivy["score"], ivy["reasons"]) == (70, ["follower_jump"])
    # jay: +20,000 on the day his engagement doubled; MAD 0, so the scale is 1 follower.
    assert jay["largest_follower_change_score"] == 19900  # 20,000 - the median 100
    assert jay["follower_jumps"] == 0
    assert (jay["healthy_engagement_rate_low"], jay["healthy_engagement_rate_high"]) == (1, 3)
    assert (jay["score"], jay["reasons"]) == (100, [])


def test_a_creator_missing_from_the_catalog_is_compared_with_no_tier(
    engine: ClickHouseWriter,
) -> None:
    zed = authenticity(engine)["zed"]
    assert (zed["tier"], zed["tier_creators"]) == ("unknown", 1)
    assert zed["engagement_rate"] == Decimal("1.1")  # 11 / 1,000 x 100
    assert (zed["healthy_engagement_rate_low"], zed["healthy_engagement_rate_high"]) == (
        None,
        None,
    )
    assert zed["follower_changes"] == 0
    assert zed["follower_change_median"] is None
    assert (zed["score"], zed["reasons"]) == (100, [])


def test_the_leak_alert_fires_on_the_views_thresholds() -> None:
    rules = ALERTS.read_text()
    thresholds = {
        metric: Decimal(value)
        for metric, value in re.findall(r"\((attribution_code_\w+)\) >= ([\d.]+)", rules)
    }
    assert thresholds == {
        "attribution_code_redemptions": fraud_views.LEAK_MIN_REDEMPTIONS,
        "attribution_code_no_click_ratio": fraud_views.LEAK_MIN_NO_CLICK_SHARE,
        "attribution_code_leak_score": fraud_views.LEAK_MIN_SPIKE_SCORE,
    }
