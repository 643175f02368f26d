"""The order stage: one ledger per order id, joining an order with its refunds and codes.

Refunds and code redemptions name only the order, so they meet the order here, are
judged (currency, refund window, never above the total), held while the order is
unknown, and passed on to the customer's journey as one `OrderUpdated` snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from attribution.messages import (
    LockRate,
    OrderCommand,
    OrderFacts,
    OrderUpdated,
    PlaceOrder,
    ReassignOrder,
    RedeemCode,
    RefundFacts,
    RequestRefund,
    Touchpoint,
    Wire,
    order_key,
)
from attribution.rows import RefundRow, Rejection
from attribution.rules import Rules

LedgerOutput = OrderUpdated | RefundRow | Rejection


@dataclass(slots=True)
class Ledger:
    order_id: str
    order: OrderFacts | None = None
    refunds: dict[str, RefundFacts] = field(default_factory=dict)
    """Every refund received for the order, accepted or not: which are accepted is decided
    again over all of them whenever one arrives (`accepted_refunds`)."""
    rejected: frozenset[str] = frozenset()
    """Refunds already reported as rejected, so each goes to the dead letters once."""
    codes: dict[str, Touchpoint] = field(default_factory=dict)
    ignored_duplicate_orders: int = 0


def _refund_problem(
    order: OrderFacts, refund: RefundFacts, already: Decimal, rules: Rules
) -> tuple[str, str] | None:
    """(field, reason) when the refund must be refused after `already` was refunded, else None."""
    if refund.currency != order.currency:
        return "currency", f"currency {refund.currency} differs from the order's {order.currency}"
    if refund.occurred_at > order.occurred_at + rules.refund_window:
        return "occurred_at", f"refund later than {rules.refund_window.days} days after the order"
    if already + refund.amount > order.total:
        return "amount", (
            f"refunds would total {already + refund.amount}, above the order total {order.total}"
        )
    return None


def judge_refunds(
    order: OrderFacts, refunds: Iterable[RefundFacts], rules: Rules
) -> tuple[list[RefundFacts], dict[str, tuple[str, str]]]:
    """The accepted refunds and, per refused refund id, its (field, reason).

    Refunds are judged in (occurred_at, event_id) order, never in arrival order, so the
    outcome is a function of the refunds alone: a refund that arrives late but happened
    first is judged first, and may push a later one over the total.
    """
    accepted: list[RefundFacts] = []
    refused: dict[str, tuple[str, str]] = {}
    refunded = Decimal(0)
    for refund in sorted(refunds, key=lambda refund: (refund.occurred_at, refund.event_id)):
        problem = _refund_problem(order, refund, refunded, rules)
        if problem is None:
            accepted.append(refund)
            refunded += refund.amount
        else:
            refused[refund.event_id] = problem
    return accepted, refused


def apply_to_ledger(
    ledger: Ledger | None, command: OrderCommand, rules: Rules
) -> tuple[Ledger | None, list[LedgerOutput]]:
    """Fold an order, refund or code redemption into the order's ledger.

    Refunds that arrive before their order are held and judged when it arrives; every
    command on a known order forwards the whole snapshot, so redelivery is harmless.
    """
    if ledger is None and isinstance(command, (ReassignOrder, LockRate)):
        return None, []  # the order was already forgotten: nothing of the customer is left
    if ledger is None:
        ledger = Ledger(order_key(command))
    match command:
        case PlaceOrder(order):
            if ledger.order is None:
                ledger.order = order
            elif ledger.order.event_id != order.event_id:
                ledger.ignored_duplicate_orders += 1
            elif ledger.order.fx is None and order.fx is not None:
                ledger.order = replace(ledger.order, fx=order.fx)
        case LockRate(_, fx):
            # A rate is locked once: the first one known is the order's for good.
            if ledger.order is not None and ledger.order.fx is None:
                ledger.order = replace(ledger.order, fx=fx)
        case RequestRefund(refund):
            ledger.refunds.setdefault(refund.event_id, refund)
        case RedeemCode(_, touchpoint):
            ledger.codes.setdefault(touchpoint.event_id, touchpoint)
        case ReassignOrder(_, customer_id):
            # An erased customer's order: its journey moved to the pseudonym, which is where
            # the snapshots of later refunds and codes must now go.
            if ledger.order is not None:
                ledger.order = replace(ledger.order, customer_id=customer_id)
            ledger.codes = {
                event_id: replace(code, visitor_id="", customer_id="")
                for event_id, code in ledger.codes.items()
            }
            return ledger, []
    if ledger.order is None:
        return ledger, []
    accepted, refused = judge_refunds(ledger.order, ledger.refunds.values(), rules)
    outputs: list[LedgerOutput] = [
        Rejection(
            refund.event_id, *refused[refund.event_id], {"type": "refund", **refund.to_wire()}
        )
        for refund in ledger.refunds.values()
        if refund.event_id in refused and refund.event_id not in ledger.rejected
    ]
    ledger.rejected = ledger.rejected.union(refused)
    # Refund decisions and the snapshot go out again on every command: both are idempotent
    # downstream (a journey restates an order only when its rows change). A decision's version
    # is how many refunds it was judged among, so a newer decision replaces an older one.
    judged_among = len(ledger.refunds)
    outputs.extend(
        RefundRow(
            refund.event_id,
            refund.order_id,
            refund.occurred_at,
            refund.amount,
            refund.currency,
            refund.reason,
            "rejected" if refund.event_id in refused else "accepted",
            judged_among,
        )
        for refund in ledger.refunds.values()
    )
    outputs.append(OrderUpdated(ledger.order, tuple(accepted), tuple(ledger.codes.values())))
    return ledger, outputs


def ledger_newest_event_at(ledger: Ledger) -> datetime | None:
    times = [
        *([] if ledger.order is None else [ledger.order.occurred_at]),
        *(refund.occurred_at for refund in ledger.refunds.values()),
        *(code.occurred_at for code in ledger.codes.values()),
    ]
    return max(times, default=None)


def ledger_expires_at(ledger: Ledger, rules: Rules) -> datetime | None:
    """The event time after which no refund or code of the order can be accepted."""
    newest = ledger_newest_event_at(ledger)
    return None if newest is None else newest + rules.order_retention


def ledger_to_wire(ledger: Ledger) -> Wire:
    return {
        "o": ledger.order_id,
        "order": None if ledger.order is None else ledger.order.to_wire(),
        "r": [refund.to_wire() for refund in ledger.refunds.values()],
        "x": sorted(ledger.rejected),
        "c": [code.to_wire() for code in ledger.codes.values()],
        "d": ledger.ignored_duplicate_orders,
    }


def ledger_from_wire(wire: Wire) -> Ledger:
    # Changelogs written before every refund was kept list the held ones apart ("h").
    refunds = (RefundFacts.from_wire(refund) for refund in [*wire["r"], *wire.get("h", [])])
    codes = (Touchpoint.from_wire(code) for code in wire["c"])
    return Ledger(
        wire["o"],
        None if wire["order"] is None else OrderFacts.from_wire(wire["order"]),
        {refund.event_id: refund for refund in refunds},
        frozenset(wire.get("x", ())),
        {code.event_id: code for code in codes},
        wire["d"],
    )
