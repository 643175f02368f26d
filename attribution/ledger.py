"""The order stage: one ledger per order id, joining an order with its refunds and codes.

Refunds and code redemptions name only the order, so they meet the order here, are
checked (currency, refund window, never above the total), held while the order is
unknown, and passed on to the customer's journey as one `OrderUpdated` snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from attribution.messages import (
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
    held_refunds: dict[str, RefundFacts] = field(default_factory=dict)
    codes: dict[str, Touchpoint] = field(default_factory=dict)
    ignored_duplicate_orders: int = 0


def _refund_problem(
    ledger: Ledger, order: OrderFacts, refund: RefundFacts, rules: Rules
) -> tuple[str, str] | None:
    """(field, reason) when the refund must be refused, else None."""
    if refund.currency != order.currency:
        return "currency", f"currency {refund.currency} differs from the order's {order.currency}"
    if refund.occurred_at > order.occurred_at + rules.refund_window:
        return "occurred_at", f"refund later than {rules.refund_window.days} days after the order"
    already = sum((accepted.amount for accepted in ledger.refunds.values()), Decimal(0))
    if already + refund.amount > order.total:
        return "amount", (
            f"refunds would total {already + refund.amount}, above the order total {order.total}"
        )
    return None


def _accept_refunds(
    ledger: Ledger, order: OrderFacts, candidates: list[RefundFacts], rules: Rules
) -> list[Rejection]:
    rejections: list[Rejection] = []
    for refund in sorted(candidates, key=lambda refund: (refund.occurred_at, refund.event_id)):
        problem = _refund_problem(ledger, order, refund, rules)
        if problem is None:
            ledger.refunds[refund.event_id] = refund
        else:
            field_name, reason = problem
            rejections.append(
                Rejection(
                    refund.event_id, field_name, reason, {"type": "refund", **refund.to_wire()}
                )
            )
    return rejections


def _snapshot(ledger: Ledger, order: OrderFacts) -> OrderUpdated:
    return OrderUpdated(order, tuple(ledger.refunds.values()), tuple(ledger.codes.values()))


def apply_to_ledger(
    ledger: Ledger | None, command: OrderCommand, rules: Rules
) -> tuple[Ledger | None, list[LedgerOutput]]:
    """Fold an order, refund or code redemption into the order's ledger.

    A refund that arrives first is held and checked when the order arrives; every
    command on a known order forwards the whole snapshot, so redelivery is harmless.
    """
    if ledger is None and isinstance(command, ReassignOrder):
        return None, []  # the order was already forgotten: nothing of the customer is left
    if ledger is None:
        ledger = Ledger(order_key(command))
    outputs: list[LedgerOutput] = []
    match command:
        case PlaceOrder(order):
            if ledger.order is None:
                ledger.order = order
                held = list(ledger.held_refunds.values())
                ledger.held_refunds.clear()
                outputs.extend(_accept_refunds(ledger, order, held, rules))
            elif ledger.order.event_id != order.event_id:
                ledger.ignored_duplicate_orders += 1
        case RequestRefund(refund):
            if refund.event_id in ledger.refunds or refund.event_id in ledger.held_refunds:
                pass
            elif ledger.order is None:
                ledger.held_refunds[refund.event_id] = refund
            else:
                outputs.extend(_accept_refunds(ledger, ledger.order, [refund], rules))
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
    if ledger.order is not None:
        # Refund rows and the snapshot go out again on every command: both are idempotent
        # downstream, and repeating them repairs output lost before a crash.
        outputs.extend(
            RefundRow(
                refund.event_id,
                refund.order_id,
                refund.occurred_at,
                refund.amount,
                refund.currency,
                refund.reason,
            )
            for refund in ledger.refunds.values()
        )
        outputs.append(_snapshot(ledger, ledger.order))
    return ledger, outputs


def ledger_newest_event_at(ledger: Ledger) -> datetime | None:
    times = [
        *([] if ledger.order is None else [ledger.order.occurred_at]),
        *(refund.occurred_at for refund in ledger.refunds.values()),
        *(refund.occurred_at for refund in ledger.held_refunds.values()),
        *(code.occurred_at for code in ledger.codes.values()),
    ]
    return max(times, default=None)


def ledger_expires_at(ledger: Ledger, rules: Rules) -> datetime | None:
    """The event time after which no refund or code of the order can be accepted."""
    newest = ledger_newest_event_at(ledger)
    return None if newest is None else newest + rules.refund_window


def ledger_to_wire(ledger: Ledger) -> Wire:
    return {
        "o": ledger.order_id,
        "order": None if ledger.order is None else ledger.order.to_wire(),
        "r": [refund.to_wire() for refund in ledger.refunds.values()],
        "h": [refund.to_wire() for refund in ledger.held_refunds.values()],
        "c": [code.to_wire() for code in ledger.codes.values()],
        "d": ledger.ignored_duplicate_orders,
    }


def ledger_from_wire(wire: Wire) -> Ledger:
    refunds = (RefundFacts.from_wire(refund) for refund in wire["r"])
    held = (RefundFacts.from_wire(refund) for refund in wire["h"])
    codes = (Touchpoint.from_wire(code) for code in wire["c"])
    return Ledger(
        wire["o"],
        None if wire["order"] is None else OrderFacts.from_wire(wire["order"]),
        {refund.event_id: refund for refund in refunds},
        {refund.event_id: refund for refund in held},
        {code.event_id: code for code in codes},
        wire["d"],
    )
