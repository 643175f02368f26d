"""Facts and commands passed between the stages of the pipeline, with their wire form.

Each stage is keyed differently (visitor, order, customer), so these travel on
repartition topics in streaming and through in-memory queues in replay. The
wire form is a plain JSON-ready dict so that both paths share one codec.
"""

from __future__ import annotations

import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from attribution.fx import LockedRate
from attribution.values import immutable

Wire = dict[str, Any]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _optional_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _rate_to_wire(fx: LockedRate) -> list[str]:
    return [fx.reporting_currency, str(fx.rate), fx.published_on.isoformat()]


def _rate_from_wire(wire: list[str]) -> LockedRate:
    currency, rate, published_on = wire
    return LockedRate(currency, Decimal(rate), date.fromisoformat(published_on))


def one_copy(text: str) -> str:
    """One copy of a name many stored touchpoints or orders hold (an influencer, campaign,
    platform, tier, visitor or currency), where each parsed event brings its own (an influencer's
    names cost 97 bytes per touchpoint, a visitor's id 30)."""
    return sys.intern(text)


@immutable
class Touchpoint:
    """An influencer click, or the code redemption of an order (`code` set)."""

    event_id: str
    occurred_at: datetime
    influencer_id: str
    campaign_id: str
    platform: str
    tier: str
    visitor_id: str = ""
    customer_id: str = ""
    code: str = ""
    code_policy: str = ""
    """A code's campaign override of the program's code policy; '' follows the program."""
    flags: tuple[str, ...] = ()
    """Why a click is invalid or suspicious (attribution.traffic), sorted; () when valid."""
    ip_hash: str = ""
    """The traffic stage's key of a click classified there: where an erasure must reach."""
    requires_click: bool = False
    """A code that earns only when its owner also has a click in the journey (`if_involved`)."""

    @property
    def kind(self) -> str:
        return "code" if self.code else "click"

    def to_wire(self) -> Wire:
        wire: Wire = {
            "e": self.event_id,
            "t": self.occurred_at.isoformat(),
            "i": self.influencer_id,
            "c": self.campaign_id,
            "p": self.platform,
            "r": self.tier,
            "v": self.visitor_id,
            "u": self.customer_id,
            "k": self.code,
        }
        # Only codes of campaigns with their own policy carry one: clicks stay as small as before.
        if self.code_policy:
            wire["q"] = self.code_policy
        if self.flags:
            wire["f"] = list(self.flags)
        if self.ip_hash:
            wire["h"] = self.ip_hash
        if self.requires_click:
            wire["ic"] = True
        return wire

    @classmethod
    def from_wire(cls, wire: Wire) -> Touchpoint:
        return cls(
            wire["e"],
            _time(wire["t"]),
            one_copy(wire["i"]),
            one_copy(wire["c"]),
            one_copy(wire["p"]),
            one_copy(wire["r"]),
            one_copy(wire["v"]),
            wire["u"],
            wire["k"],
            wire.get("q", ""),
            tuple(wire.get("f", ())),
            one_copy(wire.get("h", "")),
            wire.get("ic", False),
        )


@immutable
class OrderFacts:
    event_id: str
    order_id: str
    customer_id: str
    occurred_at: datetime
    currency: str
    total: Decimal
    fx: LockedRate | None = None
    """The rate into the reporting currency, locked once known; None until it is published."""

    def to_wire(self) -> Wire:
        wire: Wire = {
            "e": self.event_id,
            "o": self.order_id,
            "u": self.customer_id,
            "t": self.occurred_at.isoformat(),
            "cur": self.currency,
            "total": str(self.total),
        }
        if self.fx is not None:
            wire["fx"] = _rate_to_wire(self.fx)
        return wire

    @classmethod
    def from_wire(cls, wire: Wire) -> OrderFacts:
        fx = wire.get("fx")
        return cls(
            wire["e"],
            wire["o"],
            wire["u"],
            _time(wire["t"]),
            wire["cur"],
            Decimal(wire["total"]),
            None if fx is None else _rate_from_wire(fx),
        )


@immutable
class RefundFacts:
    event_id: str
    order_id: str
    occurred_at: datetime
    amount: Decimal
    currency: str
    reason: str = ""

    def to_wire(self) -> Wire:
        return {
            "e": self.event_id,
            "o": self.order_id,
            "t": self.occurred_at.isoformat(),
            "a": str(self.amount),
            "cur": self.currency,
            "why": self.reason,
        }

    @classmethod
    def from_wire(cls, wire: Wire) -> RefundFacts:
        return cls(
            wire["e"], wire["o"], _time(wire["t"]), Decimal(wire["a"]), wire["cur"], wire["why"]
        )


# --- commands to the traffic stage (keyed by the keyed hash of the IP address) -------


@immutable
class ScreenClick:
    """An influencer click to classify against the other clicks of its IP address."""

    ip_hash: str
    user_agent_hash: str
    touchpoint: Touchpoint


@immutable
class ForgetClickOwners:
    """An erasure: the traffic stage forgets whose these clicks were (visitor and customer)."""

    ip_hash: str
    influencer_id: str
    event_ids: tuple[str, ...]


# --- commands to the visitor stage (keyed by visitor_id) ---------------------------


@immutable
class VisitorClick:
    """An influencer click of a visitor; `touchpoint.customer_id` set when logged in."""

    visitor_id: str
    touchpoint: Touchpoint


@immutable
class VisitorLink:
    """This visitor belongs to this customer (identify, or a click/order with both ids)."""

    visitor_id: str
    customer_id: str
    occurred_at: datetime
    event_id: str


# --- commands to the order stage (keyed by order_id) ------------------------------


@immutable
class PlaceOrder:
    order: OrderFacts


@immutable
class RequestRefund:
    refund: RefundFacts


@immutable
class LockRate:
    """The rate of an order whose rate was not published when it arrived."""

    order_id: str
    fx: LockedRate


@immutable
class RedeemCode:
    """A redemption of a known code; unknown codes never reach the order stage."""

    order_id: str
    touchpoint: Touchpoint


# --- commands to the journey stage (keyed by customer_id) -------------------------


@immutable
class TouchpointsArrived:
    """Clicks that belong to a customer; `linked_at` is None for clicks carrying the customer id,
    else the time the visitor was linked to the customer."""

    customer_id: str
    visitor_id: str
    linked_at: datetime | None
    touchpoints: tuple[Touchpoint, ...]


@immutable
class OrderUpdated:
    """The order stage's whole knowledge of an order: its facts, accepted refunds, known codes."""

    order: OrderFacts
    refunds: tuple[RefundFacts, ...]
    codes: tuple[Touchpoint, ...]


# --- erasure of a customer's personal data (`attribution erase`) ---------------------


@immutable
class EraseCustomer:
    """To the journey stage: the customer's journey moves to `pseudonym` without visitor ids,
    their orders are reassigned to it, and their visitors (these and the journey's) forgotten."""

    customer_id: str
    pseudonym: str
    visitor_ids: tuple[str, ...]


@immutable
class AdoptJourney:
    """To the journey stage: an erased customer's journey (wire form) under its pseudonym."""

    pseudonym: str
    journey: Wire


@immutable
class ReassignOrder:
    """To the order stage: the order now belongs to an erased customer's pseudonym."""

    order_id: str
    customer_id: str


@immutable
class ForgetVisitor:
    """To the visitor stage: drop the visitor (an erased customer's browser)."""

    visitor_id: str


VisitorCommand = VisitorClick | VisitorLink | ForgetVisitor
OrderCommand = PlaceOrder | RequestRefund | RedeemCode | ReassignOrder | LockRate
JourneyCommand = TouchpointsArrived | OrderUpdated | EraseCustomer | AdoptJourney
TrafficCommand = ScreenClick | ForgetClickOwners
Command = TrafficCommand | VisitorCommand | OrderCommand | JourneyCommand
TRAFFIC_COMMANDS = (ScreenClick, ForgetClickOwners)
VISITOR_COMMANDS = (VisitorClick, VisitorLink, ForgetVisitor)
ORDER_COMMANDS = (PlaceOrder, RequestRefund, RedeemCode, ReassignOrder, LockRate)
JOURNEY_COMMANDS = (TouchpointsArrived, OrderUpdated, EraseCustomer, AdoptJourney)


def traffic_key(command: TrafficCommand) -> str:
    """The traffic stage compares the clicks of one address on one influencer (both of its
    rules are per influencer), so one busy address spreads over as many keys as it clicks
    creators."""
    if isinstance(command, ScreenClick):
        return f"{command.ip_hash}:{command.touchpoint.influencer_id}"
    return f"{command.ip_hash}:{command.influencer_id}"


def order_key(command: OrderCommand) -> str:
    """The order id an order-stage command is keyed (partitioned) by."""
    if isinstance(command, PlaceOrder):
        return command.order.order_id
    if isinstance(command, RequestRefund):
        return command.refund.order_id
    return command.order_id


def customer_key(command: JourneyCommand) -> str:
    """The customer id a journey-stage command is keyed (partitioned) by."""
    if isinstance(command, (TouchpointsArrived, EraseCustomer)):
        return command.customer_id
    if isinstance(command, AdoptJourney):
        return command.pseudonym
    return command.order.customer_id


def command_to_wire(command: Command) -> Wire:
    match command:
        case ScreenClick(ip_hash, user_agent_hash, touchpoint):
            return {
                "kind": "screen_click",
                "ip": ip_hash,
                "ua": user_agent_hash,
                "tp": touchpoint.to_wire(),
            }
        case ForgetClickOwners(ip_hash, influencer_id, event_ids):
            return {
                "kind": "forget_click_owners",
                "ip": ip_hash,
                "i": influencer_id,
                "es": list(event_ids),
            }
        case VisitorClick(visitor_id, touchpoint):
            return {"kind": "visitor_click", "v": visitor_id, "tp": touchpoint.to_wire()}
        case VisitorLink(visitor_id, customer_id, occurred_at, event_id):
            return {
                "kind": "visitor_link",
                "v": visitor_id,
                "u": customer_id,
                "t": occurred_at.isoformat(),
                "e": event_id,
            }
        case PlaceOrder(order):
            return {"kind": "place_order", "order": order.to_wire()}
        case RequestRefund(refund):
            return {"kind": "request_refund", "refund": refund.to_wire()}
        case RedeemCode(order_id, touchpoint):
            return {"kind": "redeem_code", "o": order_id, "tp": touchpoint.to_wire()}
        case TouchpointsArrived(customer_id, visitor_id, linked_at, touchpoints):
            return {
                "kind": "touchpoints",
                "u": customer_id,
                "v": visitor_id,
                "l": None if linked_at is None else linked_at.isoformat(),
                "tps": [touchpoint.to_wire() for touchpoint in touchpoints],
            }
        case OrderUpdated(order, refunds, codes):
            return {
                "kind": "order_updated",
                "order": order.to_wire(),
                "refunds": [refund.to_wire() for refund in refunds],
                "codes": [code.to_wire() for code in codes],
            }
        case EraseCustomer(customer_id, pseudonym, visitor_ids):
            return {"kind": "erase", "u": customer_id, "p": pseudonym, "vs": list(visitor_ids)}
        case AdoptJourney(pseudonym, journey):
            return {"kind": "adopt", "p": pseudonym, "j": journey}
        case ReassignOrder(order_id, customer_id):
            return {"kind": "reassign_order", "o": order_id, "u": customer_id}
        case LockRate(order_id, fx):
            return {"kind": "lock_rate", "o": order_id, "fx": _rate_to_wire(fx)}
        case ForgetVisitor(visitor_id):
            return {"kind": "forget_visitor", "v": visitor_id}
    raise TypeError(f"not a pipeline command: {command!r}")


def command_from_wire(wire: Wire) -> Command:
    match wire["kind"]:
        case "screen_click":
            return ScreenClick(wire["ip"], wire["ua"], Touchpoint.from_wire(wire["tp"]))
        case "forget_click_owners":
            return ForgetClickOwners(wire["ip"], wire["i"], tuple(wire["es"]))
        case "visitor_click":
            return VisitorClick(wire["v"], Touchpoint.from_wire(wire["tp"]))
        case "visitor_link":
            return VisitorLink(wire["v"], wire["u"], _time(wire["t"]), wire["e"])
        case "place_order":
            return PlaceOrder(OrderFacts.from_wire(wire["order"]))
        case "request_refund":
            return RequestRefund(RefundFacts.from_wire(wire["refund"]))
        case "redeem_code":
            return RedeemCode(wire["o"], Touchpoint.from_wire(wire["tp"]))
        case "touchpoints":
            return TouchpointsArrived(
                wire["u"],
                wire["v"],
                _optional_time(wire["l"]),
                tuple(Touchpoint.from_wire(tp) for tp in wire["tps"]),
            )
        case "order_updated":
            return OrderUpdated(
                OrderFacts.from_wire(wire["order"]),
                tuple(RefundFacts.from_wire(refund) for refund in wire["refunds"]),
                tuple(Touchpoint.from_wire(code) for code in wire["codes"]),
            )
        case "erase":
            return EraseCustomer(wire["u"], wire["p"], tuple(wire["vs"]))
        case "adopt":
            return AdoptJourney(wire["p"], wire["j"])
        case "reassign_order":
            return ReassignOrder(wire["o"], wire["u"])
        case "lock_rate":
            return LockRate(wire["o"], _rate_from_wire(wire["fx"]))
        case "forget_visitor":
            return ForgetVisitor(wire["v"])
    raise ValueError(f"unknown command kind {wire['kind']!r}")


def wire_event_ids(wire: Wire) -> list[str]:
    """The ids of the events a command's wire form carries, for error reports.

    >>> wire_event_ids({"kind": "touchpoints", "tps": [{"e": "k1"}, {"e": "k2"}]})
    ['k1', 'k2']
    """
    found = [wire["e"]] if isinstance(wire.get("e"), str) else []
    for value in wire.values():
        nested = value if isinstance(value, list) else [value]
        for item in nested:
            if isinstance(item, dict):
                found += wire_event_ids(item)
    return found
