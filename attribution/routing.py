"""The ingest stage: a valid event becomes keyed commands for the stateful stages and raw rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC

from attribution.catalog import Catalog, resolve_click, resolve_code
from attribution.messages import (
    OrderCommand,
    OrderFacts,
    PlaceOrder,
    RedeemCode,
    RefundFacts,
    RequestRefund,
    ScreenClick,
    Touchpoint,
    TrafficCommand,
    VisitorClick,
    VisitorCommand,
    VisitorLink,
    one_copy,
)
from attribution.privacy import keyed_hash
from attribution.rows import (
    ClickRow,
    CodeRedemptionRow,
    ContentMetricsRow,
    IdentityRow,
    OrderItemRow,
    Row,
)
from attribution.traffic import KNOWN_CRAWLER, classification_row, event_flags
from schemas.events import (
    Click,
    CodeRedemption,
    ContentMetrics,
    Event,
    Identify,
    Order,
    Refund,
)


@dataclass(slots=True)
class Routed:
    """Where one event goes: commands keyed by IP, visitor and order, and rows to store."""

    to_visitors: list[VisitorCommand]
    to_orders: list[OrderCommand]
    rows: list[Row]
    to_traffic: list[TrafficCommand] = field(default_factory=list)


def _link(visitor_id: str, customer_id: str, event: Event) -> tuple[VisitorLink, IdentityRow]:
    return (
        VisitorLink(visitor_id, customer_id, event.occurred_at, event.event_id),
        IdentityRow(event.event_id, event.occurred_at, visitor_id, customer_id),
    )


def route_event(event: Event, catalog: Catalog, pii_key: bytes = b"") -> Routed:
    """Resolve influencers through the catalog and split the event by destination.

    A click with both ids and an order with a visitor are identify events too (contract 2.5).
    A click's IP address and user agent leave only as hashes keyed with `pii_key`.
    """
    routed = Routed([], [], [])
    match event:
        case Click():
            resolved = resolve_click(
                catalog,
                url=event.url,
                influencer_id=event.influencer_id,
                campaign_id=event.campaign_id,
                link_id=event.link_id,
                platform=event.platform,
            )
            customer_id = event.customer_id or ""
            ip_hash = keyed_hash(event.ip, pii_key)
            user_agent_hash = keyed_hash(event.user_agent, pii_key)
            routed.rows.append(
                ClickRow(
                    event.event_id,
                    event.occurred_at,
                    event.visitor_id,
                    customer_id,
                    resolved.influencer_id if resolved else "",
                    resolved.campaign_id if resolved else "",
                    resolved.platform if resolved else (event.platform or ""),
                    resolved.tier if resolved else "",
                    event.link_id or "",
                    event.url,
                    ip_hash,
                    user_agent_hash,
                )
            )
            if customer_id:
                routed.rows.append(
                    IdentityRow(event.event_id, event.occurred_at, event.visitor_id, customer_id)
                )
            if resolved is not None:
                touchpoint = Touchpoint(
                    event.event_id,
                    event.occurred_at,
                    one_copy(resolved.influencer_id),
                    one_copy(resolved.campaign_id),
                    one_copy(resolved.platform),
                    one_copy(resolved.tier),
                    visitor_id=one_copy(event.visitor_id),
                    customer_id=customer_id,
                    flags=event_flags(event.user_agent),
                    ip_hash=one_copy(ip_hash),
                )
                if ip_hash and KNOWN_CRAWLER not in touchpoint.flags:
                    routed.to_traffic.append(ScreenClick(ip_hash, user_agent_hash, touchpoint))
                else:
                    # Without a key no address is kept: only the click's own reasons apply. A
                    # crawler's click is invalid whatever its neighbours; crawlers click a lot.
                    routed.to_visitors.append(VisitorClick(touchpoint.visitor_id, touchpoint))
                    routed.rows.append(classification_row(touchpoint, 0))
            elif customer_id:
                routed.to_visitors.append(
                    VisitorLink(event.visitor_id, customer_id, event.occurred_at, event.event_id)
                )
        case Identify():
            link, row = _link(event.visitor_id, event.customer_id, event)
            routed.to_visitors.append(link)
            routed.rows.append(row)
        case Order():
            routed.rows.extend(
                OrderItemRow(
                    event.order_id,
                    line,
                    event.occurred_at,
                    item.sku,
                    item.category or "",
                    item.quantity,
                    item.unit_price,
                    event.currency,
                )
                for line, item in enumerate(event.items, start=1)
            )
            if event.visitor_id:
                link, row = _link(event.visitor_id, event.customer_id, event)
                routed.to_visitors.append(link)
                routed.rows.append(row)
            routed.to_orders.append(
                PlaceOrder(
                    OrderFacts(
                        event.event_id,
                        event.order_id,
                        event.customer_id,
                        event.occurred_at,
                        one_copy(event.currency),
                        event.total,
                        catalog.exchange_rate(
                            event.currency, event.occurred_at.astimezone(UTC).date()
                        ),
                    )
                )
            )
        case Refund():
            routed.to_orders.append(
                RequestRefund(
                    RefundFacts(
                        event.event_id,
                        event.order_id,
                        event.occurred_at,
                        event.amount,
                        one_copy(event.currency),
                        event.reason or "",
                    )
                )
            )
        case CodeRedemption():
            target = resolve_code(catalog, event.code)
            routed.rows.append(
                CodeRedemptionRow(
                    event.event_id,
                    event.occurred_at,
                    event.code.upper(),
                    event.order_id,
                    event.customer_id or "",
                    target.influencer_id if target else "",
                    target.campaign_id if target else "",
                    target is not None,
                )
            )
            if target is not None:
                touchpoint = Touchpoint(
                    event.event_id,
                    event.occurred_at,
                    one_copy(target.influencer_id),
                    one_copy(target.campaign_id),
                    one_copy(target.platform),
                    one_copy(target.tier),
                    visitor_id=one_copy(event.visitor_id or ""),
                    customer_id=event.customer_id or "",
                    code=event.code.upper(),
                    code_policy=catalog.code_policy(target.campaign_id),
                    requires_click=target.requires_click,
                )
                routed.to_orders.append(RedeemCode(event.order_id, touchpoint))
        case ContentMetrics():
            routed.rows.append(
                ContentMetricsRow(
                    event.event_id,
                    event.occurred_at,
                    event.influencer_id,
                    event.post_id,
                    event.platform,
                    event.campaign_id or "",
                    event.impressions,
                    event.reach,
                    event.likes,
                    event.comments,
                    event.shares,
                    event.saves,
                    event.followers,
                )
            )
    return routed
