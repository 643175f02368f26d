"""Generates a storefront's event stream and the catalog it refers to.

Influencers span the four tiers and several platforms; campaigns span the guide's
categories with their conversion-rate and AOV ranges (shared campaign-strategy guide:
fashion 2-5% / $35-65, beauty 3-7% / $45-85, electronics 1-3% / $150-400,
home 2-4% / $50-120, food 4-8% / $25-50). Shoppers click UTM links, log in on a
second device, redeem promo codes, order, and sometimes refund; a share of events
arrives late or twice.
"""

from __future__ import annotations

import csv
import random
import tempfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from attribution.benchmarks import CATEGORY_BENCHMARKS
from attribution.catalog import StaticCatalog
from schemas.catalog import read_catalog_dir
from sinks.catalog_store import to_static_catalog

PLATFORMS = ("instagram", "tiktok", "youtube", "pinterest")
TIER_FOLLOWERS = {
    "nano": (1_000, 9_999),
    "micro": (10_000, 99_999),
    "macro": (100_000, 999_999),
    "mega": (1_000_000, 5_000_000),
}
TIER_MIX = ("nano",) * 3 + ("micro",) * 5 + ("macro",) * 2 + ("mega",)
BROWSERS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
FARM_ADDRESS = "203.0.113.50"


def device_of(visitor: str) -> tuple[str, str]:
    """A visitor's address and browser, the same on every click (no draw from the seed's
    stream, so adding them changed no other event)."""
    digest = zlib.crc32(visitor.encode())
    address = f"198.51.{digest % 256}.{(digest >> 8) % 254 + 1}"
    return address, BROWSERS[(digest >> 16) % len(BROWSERS)]


@dataclass(frozen=True)
class Influencer:
    influencer_id: str
    handle: str
    platform: str
    followers: int
    campaign_id: str
    category: str
    code: str


@dataclass
class Storefront:
    """A seeded generator; `events()` is deterministic for a given seed and start time."""

    start: datetime
    seed: int = 7
    influencers_count: int = 12
    late_share: float = 0.03
    late_by: timedelta = timedelta(days=3)
    duplicate_share: float = 0.02
    returning_share: float = 0.15
    """Share of sessions by a shopper seen before (same customer and phone): repeat buyers."""
    sparse_share: float = 0.05
    """Share of shoppers whose session is instead a whole history of weeks to months ending
    at that moment: visits days to weeks apart, several orders, late refunds and links."""
    influencers: list[Influencer] = field(init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        categories = list(CATEGORY_BENCHMARKS)
        self.influencers = []
        for index in range(self.influencers_count):
            tier = TIER_MIX[index % len(TIER_MIX)]
            low, high = TIER_FOLLOWERS[tier]
            category = categories[index % len(categories)]
            handle = f"creator{index:03d}"
            self.influencers.append(
                Influencer(
                    f"inf-{index:03d}",
                    handle,
                    PLATFORMS[index % len(PLATFORMS)],
                    self._random.randint(low, high),
                    f"cmp-{category}",
                    category,
                    f"{handle.upper()}10",
                )
            )

    def write_catalog(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / "influencers.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["influencer_id", "handle", "platform", "followers"])
            for inf in self.influencers:
                writer.writerow([inf.influencer_id, inf.handle, inf.platform, inf.followers])
        with (directory / "campaigns.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["campaign_id", "name", "category", "starts_at", "ends_at", "budget", "currency"]
            )
            for category in CATEGORY_BENCHMARKS:
                writer.writerow(
                    [
                        f"cmp-{category}",
                        f"{category.title()} launch",
                        category,
                        (self.start - timedelta(days=30)).isoformat(),
                        (self.start + timedelta(days=60)).isoformat(),
                        "10000",
                        "USD",
                    ]
                )
        with (directory / "codes.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["code", "influencer_id", "campaign_id"])
            for inf in self.influencers:
                writer.writerow([inf.code, inf.influencer_id, inf.campaign_id])
        with (directory / "links.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["link_id", "influencer_id", "campaign_id"])
            for inf in self.influencers:
                writer.writerow([f"lnk-{inf.influencer_id}", inf.influencer_id, inf.campaign_id])
        with (directory / "contracts.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "influencer_id",
                    "campaign_id",
                    "fee_per_post",
                    "posts",
                    "retainer",
                    "commission_rate",
                    "bonus_amount",
                    "bonus_metric",
                    "bonus_threshold",
                ]
            )
            for inf in self.influencers:
                writer.writerow(
                    [
                        inf.influencer_id,
                        inf.campaign_id,
                        "300",
                        "2",
                        "0",
                        "0.10",
                        "500",
                        "conversion_rate",
                        "3",
                    ]
                )
        return directory

    def static_catalog(self) -> StaticCatalog:
        """The generated catalog as the core sees it, through the same CSV path users take."""
        with tempfile.TemporaryDirectory() as directory:
            return to_static_catalog(read_catalog_dir(self.write_catalog(Path(directory))))

    def _pick_influencer(self) -> Influencer:
        # Zipf-like popularity: the first creators get most of the traffic.
        weights = [1 / (rank + 1) for rank in range(len(self.influencers))]
        return self._random.choices(self.influencers, weights)[0]

    def _click(
        self, event_id: str, at: datetime, visitor: str, inf: Influencer, customer: str | None
    ) -> dict[str, Any]:
        style = self._random.random()
        event: dict[str, Any] = {
            "type": "click",
            "event_id": event_id,
            "occurred_at": at.isoformat(),
            "visitor_id": visitor,
            "url": "https://shop.example/p/1",
        }
        event["ip"], event["user_agent"] = device_of(visitor)
        if style < 0.6:
            event["url"] = (
                f"https://shop.example/p/1?utm_source={inf.platform}"
                f"&utm_campaign={inf.campaign_id}&utm_content={inf.influencer_id}"
            )
        elif style < 0.85:
            event["link_id"] = f"lnk-{inf.influencer_id}"
        else:
            event["influencer_id"] = inf.influencer_id
            event["campaign_id"] = inf.campaign_id
            event["platform"] = inf.platform
        if customer:
            event["customer_id"] = customer
        return event

    def _identify(self, event_id: str, at: datetime, visitor: str, customer: str) -> dict[str, Any]:
        return {
            "type": "identify",
            "event_id": event_id,
            "occurred_at": at.isoformat(),
            "visitor_id": visitor,
            "customer_id": customer,
        }

    def _order(
        self, prefix: str, at: datetime, customer: str, visitor: str, inf: Influencer
    ) -> tuple[list[dict[str, Any]], Decimal]:
        """An order of a product of the influencer's category, maybe with their promo code."""
        rng = self._random
        benchmark = CATEGORY_BENCHMARKS[inf.category]
        aov_low, aov_high = int(benchmark.aov_low), int(benchmark.aov_high)
        order_id = f"ord-{prefix}"
        total = Decimal(rng.randint(aov_low * 100, aov_high * 100)) / 100
        events: list[dict[str, Any]] = [
            {
                "type": "order",
                "event_id": f"{prefix}-o",
                "occurred_at": at.isoformat(),
                "order_id": order_id,
                "customer_id": customer,
                "visitor_id": visitor,
                "currency": "USD",
                "total": str(total),
                "items": [
                    {
                        "sku": f"sku-{inf.category}",
                        "category": inf.category,
                        "quantity": 1,
                        "unit_price": str(total),
                    }
                ],
            }
        ]
        if rng.random() < 0.3:
            code = inf.code.lower() if rng.random() < 0.5 else inf.code
            events.append(
                {
                    "type": "code_redemption",
                    "event_id": f"{prefix}-c",
                    "occurred_at": at.isoformat(),
                    "code": code,
                    "order_id": order_id,
                    "customer_id": customer,
                }
            )
        return events, total

    def _refund(
        self, prefix: str, order_id: str, at: datetime, total: Decimal, percent: int
    ) -> dict[str, Any]:
        return {
            "type": "refund",
            "event_id": f"{prefix}-r",
            "occurred_at": at.isoformat(),
            "order_id": order_id,
            "currency": "USD",
            "amount": str((total * percent / 100).quantize(Decimal("0.01"))),
        }

    def sparse_customer_events(self, shopper: int, until: datetime) -> list[dict[str, Any]]:
        """A customer's history of 40-120 days up to `until`: visits 2-20 days apart on three
        devices (anonymous until linked, some linked only after orders), several orders,
        codes, and refunds weeks after their order, some of them above what is left."""
        rng = self._random
        prefix = f"s{self.seed}-{shopper}"
        customer = f"cust-{prefix}"
        devices = [f"vis-{prefix}-{device}" for device in "abc"]
        linked: set[str] = set()
        favourite = self._pick_influencer()
        moment = until - timedelta(days=rng.randint(40, 120))
        events: list[dict[str, Any]] = []
        for visit in range(60):
            device = rng.choice(devices)
            logged_in = device in linked and rng.random() < 0.5
            for click in range(rng.randint(1, 4)):
                inf = favourite if rng.random() < 0.6 else self._pick_influencer()
                events.append(
                    self._click(
                        f"{prefix}-v{visit}k{click}",
                        moment,
                        device,
                        inf,
                        customer if logged_in else None,
                    )
                )
                moment += timedelta(minutes=rng.randint(1, 180))
            if device not in linked and rng.random() < 0.3:
                linked.add(device)
                events.append(self._identify(f"{prefix}-v{visit}id", moment, device, customer))
            if rng.random() < 0.35:
                moment += timedelta(minutes=rng.randint(1, 60))
                placed, total = self._order(
                    f"{prefix}-v{visit}", moment, customer, device, favourite
                )
                linked.add(device)
                events.extend(placed)
                refunded_at = moment + timedelta(days=rng.randint(1, 60), hours=rng.randint(0, 23))
                if rng.random() < 0.3 and refunded_at <= until:
                    order_id = placed[0]["order_id"]
                    events.append(
                        self._refund(f"{prefix}-v{visit}", order_id, refunded_at, total, 40)
                    )
                    if rng.random() < 0.3:  # a second refund, some of them too much in total
                        second = max(
                            moment + timedelta(hours=1),
                            refunded_at - timedelta(days=rng.randint(0, 5)),
                        )
                        events.append(
                            self._refund(
                                f"{prefix}-v{visit}b", order_id, second, total, rng.choice((30, 70))
                            )
                        )
            moment += timedelta(days=rng.randint(2, 20), minutes=rng.randint(0, 600))
            if moment >= until:
                break
        return [event for event in events if event["occurred_at"] <= until.isoformat()]

    def shopper_events(self, shopper: int, at: datetime) -> list[dict[str, Any]]:
        """One shopper's session: clicks, maybe a login on a second device, maybe an order;
        or, for a share of shoppers, a sparse customer's whole history up to `at`."""
        rng = self._random
        if shopper > 0 and rng.random() < self.sparse_share:
            return self.sparse_customer_events(shopper, at)
        prefix = f"s{self.seed}-{shopper}"
        returning = shopper > 0 and rng.random() < self.returning_share
        person = f"s{self.seed}-{rng.randrange(shopper) if returning else shopper}"
        customer = f"cust-{person}"
        phone, laptop = f"vis-{person}-a", f"vis-{person}-b"
        inf = self._pick_influencer()
        benchmark = CATEGORY_BENCHMARKS[inf.category]
        conv_low, conv_high = float(benchmark.conversion_low), float(benchmark.conversion_high)
        events: list[dict[str, Any]] = []
        moment = at
        for click in range(rng.randint(1, 3)):
            clicked = inf if click == 0 or rng.random() < 0.5 else self._pick_influencer()
            events.append(self._click(f"{prefix}-k{click}", moment, phone, clicked, None))
            moment += timedelta(minutes=rng.randint(1, 600))
        if rng.random() < 0.2:
            events.append(
                self._click(f"{prefix}-t", moment, phone, inf, None)
                | {
                    "url": "https://shop.example/",
                    "link_id": None,
                }
            )
        # Clicks convert at several times the category rate so the demo has orders to show.
        if rng.random() > min(1.0, rng.uniform(conv_low, conv_high) * 8):
            return events
        device = laptop if rng.random() < 0.4 else phone
        if device == laptop:
            events.append(self._identify(f"{prefix}-id", moment, phone, customer))
        moment += timedelta(minutes=rng.randint(1, 120))
        placed, total = self._order(prefix, moment, customer, device, inf)
        events.extend(placed)
        if rng.random() < 0.1:
            refunded_at = moment + timedelta(days=rng.randint(1, 20))
            percent = rng.choice((25, 50, 100))
            events.append(self._refund(prefix, placed[0]["order_id"], refunded_at, total, percent))
        return events

    def events(self, shoppers: int, spread: timedelta = timedelta(days=3)) -> list[dict[str, Any]]:
        """The events of `shoppers` sessions, in a realistic arrival order: by event time, a
        share of them delayed by up to `late_by` and a share delivered twice (the copy up to a
        day after the original), so no event arrives later than the allowed lateness."""
        rng = self._random
        stream: list[dict[str, Any]] = []
        step = spread / max(shoppers, 1)
        for shopper in range(shoppers):
            stream.extend(self.shopper_events(shopper, self.start + step * shopper))
        arrivals: list[tuple[datetime, int, dict[str, Any]]] = []
        for index, event in enumerate(stream):
            arrival = datetime.fromisoformat(event["occurred_at"])
            if rng.random() < self.late_share:
                arrival += self.late_by * rng.random()
            arrivals.append((arrival, index, event))
            if rng.random() < self.duplicate_share:
                arrivals.append((arrival + timedelta(days=rng.random()), index, event))
        return [
            {key: value for key, value in event.items() if value is not None}
            for _, _, event in sorted(arrivals, key=lambda arrival: arrival[:2])
        ]

    def split_history(
        self, events: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The events before `start` (what the sparse customers did in the months before: the
        history a storefront backfills before it goes live) and the live rest, in arrival
        order. A test that sends months of history at full speed through several partitions
        would deliver it weeks out of order; a real storefront backfills it by event time."""
        start = self.start.isoformat()
        history = [event for event in events if event["occurred_at"] < start]
        live = [event for event in events if event["occurred_at"] >= start]
        return history, live

    def fraud_events(self, at: datetime) -> list[dict[str, Any]]:
        """What a fraud filter must catch, around `at`: a crawler following influencer links, a
        click farm on one creator (one of its visitors buys), a double click, an app sending a
        blank user agent, a click seconds before its order, a promo code leaked to a coupon site
        (redeemed by new customers who never clicked its owner), and a creator who bought
        followers (a jump with no engagement behind it)."""
        farmed, leaked, inflated = (
            self.influencers[1 % len(self.influencers)],
            self.influencers[-1],
            self.influencers[2 % len(self.influencers)],
        )
        events: list[dict[str, Any]] = []

        def click(event_id: str, moment: datetime, visitor: str, inf: Influencer) -> dict[str, Any]:
            return {
                "type": "click",
                "event_id": f"fraud-{event_id}",
                "occurred_at": moment.isoformat(),
                "visitor_id": visitor,
                "url": "https://shop.example/p/1",
                "influencer_id": inf.influencer_id,
                "campaign_id": inf.campaign_id,
                "platform": inf.platform,
                "ip": device_of(visitor)[0],
                "user_agent": device_of(visitor)[1],
            }

        def order(event_id: str, moment: datetime, customer: str, total: str) -> dict[str, Any]:
            return {
                "type": "order",
                "event_id": f"fraud-{event_id}",
                "occurred_at": moment.isoformat(),
                "order_id": f"fraud-{event_id}",
                "customer_id": customer,
                "currency": "USD",
                "total": total,
            }

        for n, inf in enumerate(self.influencers[:5]):
            crawled = click(f"crawl-{n}", at + timedelta(seconds=7 * n), "crawler", inf)
            events.append(crawled | {"ip": "66.249.66.1", "user_agent": GOOGLEBOT})
        for n in range(25):
            visitor = f"farm-{n}"
            farm_click = click(f"farm-{n}", at + timedelta(seconds=19 * n), visitor, farmed)
            events.append(farm_click | {"ip": FARM_ADDRESS, "user_agent": BROWSERS[n % 2]})
        farm_buyer = at + timedelta(minutes=30)
        events.append(
            order("farm-order", farm_buyer, "cust-farm", "64.00") | {"visitor_id": "farm-3"}
        )
        twice = at + timedelta(hours=1)
        events += [
            click("double-1", twice, "double", farmed) | {"customer_id": "cust-double"},
            click("double-2", twice + timedelta(minutes=3), "double", farmed)
            | {"customer_id": "cust-double"},
            order("double-order", twice + timedelta(minutes=40), "cust-double", "48.00"),
        ]
        blank = at + timedelta(hours=2)
        events += [
            click("blank", blank, "blank-app", farmed)
            | {"user_agent": " ", "customer_id": "cust-app"},
            order("blank-order", blank + timedelta(minutes=20), "cust-app", "36.00"),
        ]
        fast = at + timedelta(hours=3)
        events += [
            click("fast", fast, "fast", farmed) | {"customer_id": "cust-fast"},
            order("fast-order", fast + timedelta(seconds=5), "cust-fast", "99.00"),
        ]
        for n in range(25):
            moment = at + timedelta(hours=4, minutes=17 * n)
            customer = f"cust-coupon-{n}"
            events.append(order(f"coupon-{n}", moment, customer, "40.00"))
            events.append(
                {
                    "type": "code_redemption",
                    "event_id": f"fraud-coupon-{n}-code",
                    "occurred_at": moment.isoformat(),
                    "code": leaked.code,
                    "order_id": f"fraud-coupon-{n}",
                    "customer_id": customer,
                }
            )
        for day in range(10):
            moment = at - timedelta(days=9 - day)
            bought = day >= 7  # followers bought two days before `at`
            followers = inflated.followers * (3 if bought else 1) + 37 * day
            impressions = inflated.followers // 4
            events.append(
                {
                    "type": "content_metrics",
                    "event_id": f"fraud-metrics-{day}",
                    "occurred_at": moment.isoformat(),
                    "influencer_id": inflated.influencer_id,
                    "post_id": f"post-inflated-{day}",
                    "platform": inflated.platform,
                    "campaign_id": inflated.campaign_id,
                    "impressions": impressions,
                    "reach": impressions * 3 // 4,
                    "likes": impressions // (200 if bought else 20),
                    "comments": impressions // (4000 if bought else 200),
                    "shares": impressions // 500,
                    "saves": impressions // 400,
                    "followers": followers,
                }
            )
        return events

    def metrics_snapshots(self, at: datetime) -> list[dict[str, Any]]:
        rng = self._random
        snapshots = []
        for inf in self.influencers:
            impressions = rng.randint(inf.followers // 5, inf.followers)
            snapshots.append(
                {
                    "type": "content_metrics",
                    "event_id": f"cm-{inf.influencer_id}-{at.timestamp():.0f}",
                    "occurred_at": at.isoformat(),
                    "influencer_id": inf.influencer_id,
                    "post_id": f"post-{inf.influencer_id}",
                    "platform": inf.platform,
                    "campaign_id": inf.campaign_id,
                    "impressions": impressions,
                    "reach": impressions * 3 // 4,
                    "likes": impressions // 20,
                    "comments": impressions // 200,
                    "shares": impressions // 500,
                    "saves": impressions // 400,
                    "followers": inf.followers,
                }
            )
        return snapshots
