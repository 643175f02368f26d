"""Small builders for core tests: events as storefronts send them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from attribution.catalog import CreditTarget, InfluencerProfile, StaticCatalog
from schemas.events import Event, validate_event

T0 = datetime(2026, 3, 1, tzinfo=UTC)

CATALOG = StaticCatalog(
    influencers={
        "anna": InfluencerProfile("anna", "anna.styles", "instagram", 45_000),
        "bob": InfluencerProfile("bob", "bobcooks", "tiktok", 850_000),
    },
    links={"lnk-bob": CreditTarget("bob", "spring")},
    codes={"ANNA10": CreditTarget("anna", "spring")},
)


def instant(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def at(days: float = 0, hours: float = 0) -> str:
    """`instant` as events carry it: an ISO 8601 string."""
    return instant(days, hours).isoformat()


def event(kind: str, event_id: str, when: str, **fields: Any) -> Event:
    return validate_event({"type": kind, "event_id": event_id, "occurred_at": when, **fields})


def click(event_id: str, when: str, visitor: str, influencer: str, **fields: Any) -> Event:
    return event(
        "click",
        event_id,
        when,
        visitor_id=visitor,
        url="https://shop.example/",
        influencer_id=influencer,
        campaign_id="spring",
        **fields,
    )


def order(
    event_id: str, when: str, order_id: str, customer: str, total: str, **fields: Any
) -> Event:
    fields.setdefault("currency", "USD")
    return event(
        "order", event_id, when, order_id=order_id, customer_id=customer, total=total, **fields
    )


def arrival_within_lateness(
    events: list[Event], lateness: timedelta, rng: random.Random
) -> list[Event]:
    """The events in an arrival order where each is delayed by up to `lateness` of event time:
    whatever arrives before an event is at most `lateness` newer than it (the contract's
    bound), while events of one customer days to weeks apart still arrive in any order."""
    delayed = [
        (item.occurred_at + lateness * rng.random(), index) for index, item in enumerate(events)
    ]
    return [events[index] for _, index in sorted(delayed)]
