"""The whole pipeline in one process, in arrival order: offline replay and backtests (contract 7).

It drives the same stage functions the streaming agents call, through in-memory
queues instead of repartition topics, so its final credits are the contract the
streaming pipeline is tested against.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from attribution.catalog import Catalog
from attribution.fx import LockedRate
from attribution.identity import Visitor, VisitorOutput, apply_to_visitor, visitor_expires_at
from attribution.journey import Journey, JourneyOutput, apply_to_journey, journey_expires_at
from attribution.lateness import LatenessTracker
from attribution.ledger import Ledger, LedgerOutput, apply_to_ledger, ledger_expires_at
from attribution.messages import (
    JOURNEY_COMMANDS,
    ORDER_COMMANDS,
    TRAFFIC_COMMANDS,
    VISITOR_COMMANDS,
    Command,
    EraseCustomer,
    LockRate,
    customer_key,
    order_key,
    traffic_key,
)
from attribution.routing import route_event
from attribution.rows import (
    CreditRow,
    IdentityConflict,
    IdentityLinked,
    OrderRow,
    Rejection,
    Row,
)
from attribution.rules import Rules
from attribution.traffic import Traffic, TrafficOutput, apply_to_traffic, traffic_expires_at
from schemas.events import Event

CreditKey = tuple[str, str, str]


@dataclass
class LocalPipeline:
    """Feed events in arrival order; read the final credits at any time.

    >>> from attribution.catalog import StaticCatalog
    >>> from schemas.events import validate_event
    >>> pipeline = LocalPipeline(StaticCatalog(), Rules())
    >>> pipeline.feed(validate_event({"type": "order", "event_id": "e1", "order_id": "o1",
    ...     "customer_id": "c1", "currency": "EUR", "total": "20",
    ...     "occurred_at": "2026-01-01T10:00:00Z"}))
    >>> [(row.model, row.influencer_id, row.revenue_credit) for row in pipeline.final_credits()][:1]
    [('first_click', '', Decimal('20'))]
    """

    catalog: Catalog
    rules: Rules
    traffic: dict[str, Traffic] = field(default_factory=dict)
    visitors: dict[str, Visitor] = field(default_factory=dict)
    ledgers: dict[str, Ledger] = field(default_factory=dict)
    journeys: dict[str, Journey] = field(default_factory=dict)
    credits: dict[CreditKey, CreditRow] = field(default_factory=dict)
    orders: dict[str, OrderRow] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    identity_conflicts: int = 0
    late_events: Counter[str] = field(default_factory=Counter)
    """Events later than the allowed lateness, by type (applied all the same)."""
    # Every row the pipeline emits, as the worker would send it to ClickHouse (tests, loads).
    on_rows: Callable[[list[Row]], None] | None = None
    pii_key: bytes = b""
    """The worker's `ATTRIBUTION_PII_SALT`: without it no address is kept, and the clicks of an
    address are not compared (attribution.traffic)."""

    def __post_init__(self) -> None:
        self._lateness = LatenessTracker(self.rules.allowed_lateness)

    def feed(self, event: Event) -> None:
        if self._lateness.observe(event.occurred_at):
            self.late_events[event.type] += 1
        routed = route_event(event, self.catalog, self.pii_key)
        self._emit(routed.rows)
        self._run([*routed.to_traffic, *routed.to_visitors, *routed.to_orders])

    def lock_rate(self, order_id: str, rate: LockedRate) -> None:
        """What the worker does when the rate of an order that was waiting for it is published."""
        self._run([LockRate(order_id, rate)])

    def erase(self, customer_id: str, pseudonym: str, visitor_ids: tuple[str, ...] = ()) -> None:
        """`attribution erase`: the customer's personal data leaves every stage."""
        self._run([EraseCustomer(customer_id, pseudonym, visitor_ids)])

    def _run(self, commands: list[Command]) -> None:
        """Apply commands and everything they cause, first in first out, as the topics do."""
        queue: deque[Command] = deque(commands)
        while queue:
            for output in self._apply(queue.popleft()):
                if isinstance(
                    output,
                    TRAFFIC_COMMANDS + VISITOR_COMMANDS + ORDER_COMMANDS + JOURNEY_COMMANDS,
                ):
                    queue.append(output)
                elif isinstance(output, IdentityConflict):
                    self.identity_conflicts += 1
                elif isinstance(output, Rejection):
                    self.rejections.append(output)
                elif not isinstance(output, IdentityLinked):
                    self._emit([output])

    def _apply(
        self, command: Command
    ) -> Sequence[TrafficOutput | VisitorOutput | LedgerOutput | JourneyOutput]:
        if isinstance(command, TRAFFIC_COMMANDS):
            key = traffic_key(command)
            traffic, traffic_outputs = apply_to_traffic(self.traffic.get(key), command, self.rules)
            keep_state(self.traffic, key, traffic)
            return traffic_outputs
        if isinstance(command, VISITOR_COMMANDS):
            key = command.visitor_id
            visitor, visitor_outputs = apply_to_visitor(self.visitors.get(key), command, self.rules)
            keep_state(self.visitors, key, visitor)
            return visitor_outputs
        if isinstance(command, ORDER_COMMANDS):
            key = order_key(command)
            ledger, ledger_outputs = apply_to_ledger(self.ledgers.get(key), command, self.rules)
            keep_state(self.ledgers, key, ledger)
            return ledger_outputs
        key = customer_key(command)
        journey, journey_outputs = apply_to_journey(self.journeys.get(key), command, self.rules)
        keep_state(self.journeys, key, journey)
        return journey_outputs

    def feed_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.feed(event)

    def sweep(self, watermark: datetime) -> int:
        """Forget every key whose state can no longer matter at `watermark` (as the
        streaming sweep does); returns how many keys were dropped."""
        before = len(self.traffic) + len(self.visitors) + len(self.ledgers) + len(self.journeys)
        self.traffic = _unexpired(self.traffic, traffic_expires_at, watermark, self.rules)
        self.visitors = _unexpired(self.visitors, visitor_expires_at, watermark, self.rules)
        self.ledgers = _unexpired(self.ledgers, ledger_expires_at, watermark, self.rules)
        self.journeys = _unexpired(self.journeys, journey_expires_at, watermark, self.rules)
        after = len(self.traffic) + len(self.visitors) + len(self.ledgers) + len(self.journeys)
        return before - after

    def _emit(self, rows: Iterable[Row]) -> None:
        """Keep the newest version of each credit key; other rows only matter to ClickHouse."""
        if self.on_rows is not None:
            rows = list(rows)
            self.on_rows(rows)
        for row in rows:
            if isinstance(row, CreditRow):
                key = (row.order_id, row.model, row.touchpoint_event_id)
                known = self.credits.get(key)
                if known is None or row.version >= known.version:
                    self.credits[key] = row
            elif isinstance(row, OrderRow):
                known_order = self.orders.get(row.order_id)
                if known_order is None or row.version >= known_order.version:
                    self.orders[row.order_id] = row

    def final_credits(self) -> list[CreditRow]:
        """Live credit rows, ordered by order, model and journey position."""
        live = (row for row in self.credits.values() if not row.is_deleted)
        return sorted(live, key=lambda row: (row.order_id, row.model, row.position))

    def final_orders(self) -> list[OrderRow]:
        """The newest version of every order, ordered by order id."""
        return sorted(self.orders.values(), key=lambda row: row.order_id)


State = TypeVar("State")


def keep_state(states: dict[str, State], key: str, state: State | None) -> None:
    """Store a stage's new state for `key`; a stage returns None for a key it no longer keeps."""
    if state is None:
        states.pop(key, None)
    else:
        states[key] = state


def _unexpired(
    states: dict[str, State],
    expires_at: Callable[[State, Rules], datetime | None],
    watermark: datetime,
    rules: Rules,
) -> dict[str, State]:
    kept = {}
    for key, state in states.items():
        expiry = expires_at(state, rules)
        if expiry is not None and expiry >= watermark:
            kept[key] = state
    return kept
