"""The whole pipeline in one process, in arrival order: offline replay and backtests (SPEC 7).

It drives the same stage functions the streaming agents call, through in-memory
queues instead of repartition topics, so its final credits are the contract the
streaming pipeline is tested against.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from attribution.catalog import Catalog
from attribution.identity import Visitor, apply_to_visitor, visitor_expires_at
from attribution.journey import Journey, apply_to_journey, journey_expires_at
from attribution.ledger import Ledger, apply_to_ledger, ledger_expires_at
from attribution.messages import (
    JourneyCommand,
    OrderUpdated,
    TouchpointsArrived,
    customer_key,
    order_key,
)
from attribution.routing import route_event
from attribution.rows import CreditRow, IdentityConflict, Rejection, Row
from attribution.rules import Rules
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
    visitors: dict[str, Visitor] = field(default_factory=dict)
    ledgers: dict[str, Ledger] = field(default_factory=dict)
    journeys: dict[str, Journey] = field(default_factory=dict)
    credits: dict[CreditKey, CreditRow] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    identity_conflicts: int = 0
    # Every row the pipeline emits, as the worker would send it to ClickHouse (tests, loads).
    on_rows: Callable[[list[Row]], None] | None = None

    def feed(self, event: Event) -> None:
        routed = route_event(event, self.catalog)
        self._emit(routed.rows)
        journey_commands: deque[JourneyCommand] = deque()
        for visitor_command in routed.to_visitors:
            key = visitor_command.visitor_id
            self.visitors[key], visitor_outputs = apply_to_visitor(
                self.visitors.get(key), visitor_command, self.rules
            )
            for output in visitor_outputs:
                if isinstance(output, TouchpointsArrived):
                    journey_commands.append(output)
                elif isinstance(output, IdentityConflict):
                    self.identity_conflicts += 1
        for order_command in routed.to_orders:
            key = order_key(order_command)
            self.ledgers[key], ledger_outputs = apply_to_ledger(
                self.ledgers.get(key), order_command, self.rules
            )
            for ledger_output in ledger_outputs:
                if isinstance(ledger_output, OrderUpdated):
                    journey_commands.append(ledger_output)
                elif isinstance(ledger_output, Rejection):
                    self.rejections.append(ledger_output)
                else:
                    self._emit([ledger_output])
        while journey_commands:
            command = journey_commands.popleft()
            customer = customer_key(command)
            self.journeys[customer], journey_rows = apply_to_journey(
                self.journeys.get(customer), command, self.rules
            )
            self._emit(journey_rows)

    def feed_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.feed(event)

    def sweep(self, watermark: datetime) -> int:
        """Forget every key whose state can no longer matter at `watermark` (as the
        streaming sweep does); returns how many keys were dropped."""
        before = len(self.visitors) + len(self.ledgers) + len(self.journeys)
        self.visitors = _unexpired(self.visitors, visitor_expires_at, watermark, self.rules)
        self.ledgers = _unexpired(self.ledgers, ledger_expires_at, watermark, self.rules)
        self.journeys = _unexpired(self.journeys, journey_expires_at, watermark, self.rules)
        return before - len(self.visitors) - len(self.ledgers) - len(self.journeys)

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

    def final_credits(self) -> list[CreditRow]:
        """Live credit rows, ordered by order, model and journey position."""
        live = (row for row in self.credits.values() if not row.is_deleted)
        return sorted(live, key=lambda row: (row.order_id, row.model, row.position))


State = TypeVar("State")


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
