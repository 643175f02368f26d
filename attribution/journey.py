"""The journey stage: a customer's touchpoints and orders, and the credit of every order.

`apply_to_journey(state, command, rules)` is the whole stage: it folds a command
into the customer's state and returns the rows to emit. An order's credit is a
pure function of the facts known about it, so it ends the same whatever the
order in which those facts arrived (contract 5, "late events").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal

from attribution.identity import forget_click_owners
from attribution.messages import (
    AdoptJourney,
    EraseCustomer,
    ForgetClickOwners,
    ForgetVisitor,
    JourneyCommand,
    OrderFacts,
    OrderUpdated,
    ReassignOrder,
    RefundFacts,
    Touchpoint,
    TouchpointsArrived,
    Wire,
    customer_key,
)
from attribution.models import ALL_MODELS, Model, model_credit_units
from attribution.money import CREDIT_QUANTUM, credits_of_units, split_units, whole_units
from attribution.rows import CreditRow, CustomerErased, OrderRow
from attribution.rules import CodePolicy, Rules, same_day
from attribution.traffic import TOO_FAST_TO_ORDER, earns, merged_flags
from attribution.values import immutable
from schemas.currencies import minor_unit_digits

EmittedRow = CreditRow | OrderRow
JourneyOutput = (
    EmittedRow | CustomerErased | AdoptJourney | ReassignOrder | ForgetVisitor | ForgetClickOwners
)
FULL_CREDIT = Decimal(1).quantize(CREDIT_QUANTUM)
NO_CREDIT = Decimal(0).quantize(CREDIT_QUANTUM)


@dataclass(slots=True)
class StoredClick:
    touchpoint: Touchpoint
    linked_at: datetime | None
    """None when the click carried the customer id; else when its visitor was linked."""


@dataclass(slots=True)
class OrderRecord:
    facts: OrderFacts
    # Tuples, not dicts: most orders have no refund and no code, and the empty tuple is free.
    refunds: tuple[RefundFacts, ...] = ()
    codes: tuple[Touchpoint, ...] = ()
    version: int = 0
    fingerprint: str = ""
    # (model, touchpoint event id) of every credit row ever emitted, flattened and sorted:
    # a tuple of the rows' own strings costs 16 bytes a key where a set of pairs costs 90.
    emitted_keys: tuple[str, ...] = ()
    credit_pending: bool = False
    """Restated since its credit was last computed, in a journey that defers credit."""

    @property
    def refunded(self) -> Decimal:
        return sum((refund.amount for refund in self.refunds), Decimal(0))


@dataclass(slots=True)
class Journey:
    customer_id: str
    clicks: dict[str, StoredClick] = field(default_factory=dict)
    orders: dict[str, OrderRecord] = field(default_factory=dict)
    newest_event_at: datetime | None = None
    defers_credit: bool = False
    """Restating only marks the order `credit_pending`: its credit is computed by the owner
    (attribution.scenario) when it needs final figures, not at every change."""


def order_code_policy(order: OrderRecord, rules: Rules) -> CodePolicy:
    """The policy of the order's code's campaign, else the program's."""
    first_code = known_code_of(order, rules)
    if first_code is not None and first_code.code_policy:
        return CodePolicy(first_code.code_policy)
    return rules.code_policy


def _journey_order(touchpoint: Touchpoint) -> tuple[datetime, str]:
    return touchpoint.occurred_at, touchpoint.event_id


def known_code_of(order: OrderRecord, rules: Rules) -> Touchpoint | None:
    """The order's code touchpoint: its earliest redemption of a known code, if redeemed
    within the restatement window."""
    latest_link = order.facts.occurred_at + rules.restatement_window
    return min(
        (code for code in order.codes if code.occurred_at <= latest_link),
        key=_journey_order,
        default=None,
    )


def _flagged_for(click: Touchpoint, order_at: datetime, rules: Rules) -> Touchpoint:
    """The click with `too_fast_to_order` added when it came too soon before this order."""
    if order_at - click.occurred_at >= rules.min_click_to_order:
        return click
    return replace(click, flags=tuple(sorted({*click.flags, TOO_FAST_TO_ORDER})))


def eligible_touchpoints(
    journey: Journey, order: OrderRecord, rules: Rules, policy: CodePolicy
) -> list[Touchpoint]:
    """Contract 5: the clicks within the lookback, then the order's code redemption last,
    unless the code policy lets the code or the links alone take the credit. Clicks the click
    policy does not let earn (invalid ones, by default) are left out."""
    order_at = order.facts.occurred_at
    earliest = order_at - rules.lookback
    latest_link = order_at + rules.restatement_window
    known_code = known_code_of(order, rules)
    clicks = []
    for stored in journey.clicks.values():
        moment = stored.touchpoint.occurred_at
        if not earliest <= moment <= order_at or (
            stored.linked_at is not None and stored.linked_at > latest_link
        ):
            continue
        click = _flagged_for(stored.touchpoint, order_at, rules)
        if earns(click.flags, rules.click_policy):
            clicks.append(click)
    clicks.sort(key=_journey_order)
    if (
        known_code is not None
        and known_code.requires_click
        and all(click.influencer_id != known_code.influencer_id for click in clicks)
    ):
        known_code = None  # an `if_involved` code whose owner the shopper never clicked
    if known_code is not None and policy is CodePolicy.CODE_WINS:
        return [known_code]
    if known_code is not None and not (clicks and policy is CodePolicy.LINK_WINS):
        clicks.append(known_code)
    return clicks[-rules.max_touchpoints :]


@immutable
class ReportingSplit:
    """The order's net revenue in the reporting currency, split like its revenue credits."""

    currency: str
    rate: Decimal
    rate_date: date | None
    net_revenue: Decimal

    @classmethod
    def of(cls, facts: OrderFacts, net_revenue: Decimal) -> ReportingSplit:
        if facts.fx is None:
            return NOT_CONVERTED
        fx = facts.fx
        return cls(fx.reporting_currency, fx.rate, fx.published_on, fx.convert(net_revenue))

    def split(
        self, credit_units: Sequence[int], revenues: list[Decimal], order_currency: str
    ) -> list[Decimal]:
        """The reporting revenue credits of credits given in whole 10^-18
        (`attribution.money.credit_units`), given the order's own (`revenues`): the same when
        the order is in the reporting currency, as most orders are."""
        if not self.currency:
            return [Decimal(0)] * len(credit_units)
        if self.currency == order_currency:
            return revenues
        digits = minor_unit_digits(self.currency)
        return split_units(whole_units(self.net_revenue, digits), credit_units, digits)


NOT_CONVERTED = ReportingSplit("", Decimal(0), None, Decimal(0))


def _bare_row(
    facts: OrderFacts,
    model: str,
    touchpoint_event_id: str,
    credit: Decimal,
    revenue: Decimal,
    version: int,
    *,
    deleted: bool,
    policy: str,
    reporting: ReportingSplit,
) -> CreditRow:
    """A credit row without touchpoint details: an unattributed order, or a retraction."""
    return CreditRow(
        facts.order_id,
        model,
        touchpoint_event_id,
        "",
        None,
        0,
        0,
        "",
        "",
        "",
        "",
        credit,
        revenue,
        facts.currency,
        facts.occurred_at,
        facts.customer_id,
        version,
        deleted,
        policy,
        reporting.currency,
        reporting.net_revenue,
        reporting.rate,
        reporting.rate_date,
    )


def credit_rows(
    journey: Journey,
    order: OrderRecord,
    rules: Rules,
    version: int,
    models: Sequence[Model] = ALL_MODELS,
) -> list[CreditRow]:
    """The credit rows of `models` for an order (zero-credit touchpoints get no row)."""
    facts = order.facts
    net_revenue = facts.total - order.refunded
    policy = order_code_policy(order, rules)
    reporting = ReportingSplit.of(facts, net_revenue)
    touchpoints = eligible_touchpoints(journey, order, rules, policy)
    times = [min(tp.occurred_at, facts.occurred_at) for tp in touchpoints]
    digits = minor_unit_digits(facts.currency)
    revenue_units = whole_units(net_revenue, digits)
    rows: list[CreditRow] = []
    policy_name = policy.value
    for model in models:
        model_name = model.value
        if not touchpoints:
            rows.append(
                _bare_row(
                    facts,
                    model_name,
                    "",
                    FULL_CREDIT,
                    net_revenue,
                    version,
                    deleted=False,
                    policy=policy_name,
                    reporting=reporting,
                )
            )
            continue
        units = model_credit_units(model, times, facts.occurred_at, rules.half_life)
        revenues = split_units(revenue_units, units, digits)
        reporting_revenues = reporting.split(units, revenues, facts.currency)
        for position, (touchpoint, unit, credit, revenue, reporting_revenue) in enumerate(
            zip(
                touchpoints,
                units,
                credits_of_units(units),
                revenues,
                reporting_revenues,
                strict=True,
            ),
            start=1,
        ):
            if unit == 0:
                continue
            rows.append(
                CreditRow(
                    facts.order_id,
                    model_name,
                    touchpoint.event_id,
                    touchpoint.kind,
                    touchpoint.occurred_at,
                    position,
                    len(touchpoints),
                    touchpoint.influencer_id,
                    touchpoint.campaign_id,
                    touchpoint.platform,
                    touchpoint.tier,
                    credit,
                    revenue,
                    facts.currency,
                    facts.occurred_at,
                    facts.customer_id,
                    version,
                    False,
                    policy_name,
                    reporting.currency,
                    reporting_revenue,
                    reporting.rate,
                    reporting.rate_date,
                    touchpoint.flags,
                )
            )
    return rows


def _fingerprint(order: OrderRecord, rows: list[CreditRow]) -> str:
    """What the order's emitted rows say, version aside: equal fingerprints, equal rows."""
    facts, fx = order.facts, order.facts.fx
    digest = hashlib.blake2b(digest_size=16)
    digest.update(
        f"{facts.customer_id}|{facts.occurred_at.isoformat()}|{facts.currency}|{facts.total}|"
        f"{order.refunded}|{fx and fx.published_on}\n".encode()
    )
    for row in rows:
        digest.update(
            f"{row.model}|{row.touchpoint_event_id}|{row.position}|{row.touchpoints}|"
            f"{row.credit}|{row.revenue_credit}|{row.code_policy}|{row.reporting_currency}|"
            f"{row.reporting_revenue_credit}|{row.fx_rate}|{row.touchpoint_flags}\n".encode()
        )
    return digest.hexdigest()


def _order_row(order: OrderRecord, touchpoints: int) -> OrderRow:
    facts = order.facts
    refunded = order.refunded
    net_revenue = facts.total - refunded
    reporting = ReportingSplit.of(facts, net_revenue)
    # Total and net are each converted; the refunded part is their difference, so the three
    # add up in the reporting currency as they do in the order's.
    reporting_total = facts.fx.convert(facts.total) if facts.fx is not None else Decimal(0)
    return OrderRow(
        facts.order_id,
        facts.customer_id,
        facts.occurred_at,
        facts.currency,
        facts.total,
        refunded,
        net_revenue,
        touchpoints,
        order.version,
        reporting.currency,
        reporting_total,
        reporting_total - reporting.net_revenue,
        reporting.net_revenue,
        reporting.rate,
        reporting.rate_date,
    )


def _with_retractions(order: OrderRecord, current: list[CreditRow]) -> list[EmittedRow]:
    """The order's rows at its current version, retracting keys it credited before."""
    live_keys = {(row.model, row.touchpoint_event_id) for row in current}
    retracted = [
        _bare_row(
            order.facts,
            model,
            touchpoint_event_id,
            NO_CREDIT,
            Decimal(0),
            order.version,
            deleted=True,
            policy="",
            reporting=NOT_CONVERTED,
        )
        for model, touchpoint_event_id in sorted(_key_pairs(order.emitted_keys) - live_keys)
    ]
    touchpoint_count = max((row.touchpoints for row in current), default=0)
    return [*current, *retracted, _order_row(order, touchpoint_count)]


def _key_pairs(flat: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(zip(flat[::2], flat[1::2], strict=True))


def _flat_keys(pairs: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(text for pair in sorted(pairs) for text in pair)


def restate(journey: Journey, order: OrderRecord, rules: Rules) -> list[EmittedRow]:
    """Recompute an order; emit a new version only if its rows changed.

    An unchanged order emits nothing, a redelivered command included: a stage sends its outputs
    before it saves its state (agents/processor.py), so a state that holds a command's effect
    was saved after that effect's rows reached Kafka.
    """
    if journey.defers_credit:
        order.credit_pending = True
        return []
    candidate = credit_rows(journey, order, rules, order.version + 1)
    fingerprint = _fingerprint(order, candidate)
    if fingerprint == order.fingerprint:
        return []
    order.version += 1
    order.fingerprint = fingerprint
    emitted = _with_retractions(order, candidate)
    order.emitted_keys = _flat_keys(
        _key_pairs(order.emitted_keys) | {(row.model, row.touchpoint_event_id) for row in candidate}
    )
    return emitted


def _covers(order: OrderRecord, moment: datetime, rules: Rules) -> bool:
    """Whether a click at `moment` lies in the order's lookback."""
    order_at = order.facts.occurred_at
    return order_at - rules.lookback <= moment <= order_at


def _worth_keeping(
    journey: Journey, moment: datetime, oldest_click: datetime, rules: Rules
) -> bool:
    """A click is kept while it is recent enough to matter to an order still to come, or
    while an order it may be credited to can still be restated (a late refund or code)."""
    return moment >= oldest_click or any(
        _covers(order, moment, rules) for order in journey.orders.values()
    )


def _advance_clock(journey: Journey, moment: datetime, rules: Rules) -> None:
    previous = journey.newest_event_at
    if previous is not None and moment <= previous:
        return
    journey.newest_event_at = moment
    # Pruning rebuilds the dicts, so it runs once per day of event time; what it keeps
    # longer is outside every window and cannot change a credit.
    if previous is not None and same_day(previous, moment):
        return
    oldest_order = moment - rules.order_retention
    journey.orders = {
        order_id: order
        for order_id, order in journey.orders.items()
        if order.facts.occurred_at >= oldest_order
    }
    oldest_click = moment - rules.touchpoint_retention
    journey.clicks = {
        event_id: stored
        for event_id, stored in journey.clicks.items()
        if _worth_keeping(journey, stored.touchpoint.occurred_at, oldest_click, rules)
    }


def journey_expires_at(journey: Journey, rules: Rules) -> datetime | None:
    """The event time after which nothing the journey holds can matter (None: already)."""
    newest = journey.newest_event_at
    return None if newest is None else newest + rules.journey_retention


def _add_touchpoints(
    journey: Journey, command: TouchpointsArrived, rules: Rules
) -> list[EmittedRow]:
    relinked = False
    if command.linked_at is not None:
        for stored in journey.clicks.values():
            if (
                stored.touchpoint.visitor_id == command.visitor_id
                and stored.linked_at is not None
                and command.linked_at < stored.linked_at
            ):
                stored.linked_at = command.linked_at
                relinked = True
    changed = relinked
    newest = max(tp.occurred_at for tp in command.touchpoints) if command.touchpoints else None
    oldest_click = (
        journey.newest_event_at - rules.touchpoint_retention if journey.newest_event_at else None
    )
    for touchpoint in command.touchpoints:
        held = journey.clicks.get(touchpoint.event_id)
        if held is not None:
            # Reclassified (a late click of the same address). A click's reasons only ever grow
            # with the clicks known (attribution.traffic), so their union is the newest, even
            # when an older copy (a redelivered link's) arrives after a newer one.
            flags = merged_flags(held.touchpoint.flags, touchpoint.flags)
            if flags != held.touchpoint.flags:
                held.touchpoint = replace(held.touchpoint, flags=flags)
                changed = True
            continue
        if oldest_click is not None and not _worth_keeping(
            journey, touchpoint.occurred_at, oldest_click, rules
        ):
            continue
        journey.clicks[touchpoint.event_id] = StoredClick(touchpoint, command.linked_at)
        changed = True
    if newest is not None:
        _advance_clock(journey, newest, rules)
    if not changed:
        return []
    # A click counts only for the orders whose lookback covers it; an earlier link of held
    # clicks may change any order's.
    times = [tp.occurred_at for tp in command.touchpoints]
    rows: list[EmittedRow] = []
    for order in journey.orders.values():
        if relinked or any(_covers(order, at, rules) for at in times):
            rows.extend(restate(journey, order, rules))
    return rows


def _unseen(
    incoming: tuple[Touchpoint, ...], known: tuple[Touchpoint, ...]
) -> tuple[Touchpoint, ...]:
    seen = {item.event_id for item in known}
    return tuple(item for item in incoming if item.event_id not in seen)


def _update_order(journey: Journey, command: OrderUpdated, rules: Rules) -> list[EmittedRow]:
    facts = command.order
    order = journey.orders.get(facts.order_id)
    if order is None:
        if (
            journey.newest_event_at is not None
            and facts.occurred_at < journey.newest_event_at - rules.order_retention
        ):
            return []
        order = OrderRecord(facts)
        journey.orders[facts.order_id] = order
    # The ledger's snapshot is the whole truth about the order (its rate may have been locked
    # since) and its refunds: a refund accepted before may be refused once an earlier one
    # arrives late and the two exceed the total.
    order.facts = facts
    order.refunds = command.refunds
    order.codes += _unseen(command.codes, order.codes)
    rows = restate(journey, order, rules)
    _advance_clock(journey, facts.occurred_at, rules)
    return rows


def apply_to_journey(
    journey: Journey | None, command: JourneyCommand, rules: Rules
) -> tuple[Journey | None, list[JourneyOutput]]:
    """Fold one command into a customer's journey; return the new state (None: forget the
    customer) and what to emit: rows, and the commands of an erasure.

    >>> from attribution.messages import OrderFacts
    >>> from datetime import UTC
    >>> at = datetime(2026, 1, 1, tzinfo=UTC)
    >>> facts = OrderFacts("e1", "o1", "c1", at, "USD", Decimal("9.99"))
    >>> journey, rows = apply_to_journey(None, OrderUpdated(facts, (), ()), Rules())
    >>> sorted({(row.model, row.revenue_credit) for row in rows if isinstance(row, CreditRow)})[0]
    ('first_click', Decimal('9.99'))
    """
    if isinstance(command, EraseCustomer):
        return None, erase_journey(journey, command)
    if isinstance(command, AdoptJourney):
        return journey_from_wire(command.journey), []
    if journey is None:
        journey = Journey(customer_key(command))
    if isinstance(command, TouchpointsArrived):
        return journey, list(_add_touchpoints(journey, command, rules))
    return journey, list(_update_order(journey, command, rules))


def anonymous(touchpoint: Touchpoint) -> Touchpoint:
    """The touchpoint without the ids of the visitor, customer and address it came from."""
    return replace(touchpoint, visitor_id="", customer_id="", ip_hash="")


def erase_journey(journey: Journey | None, command: EraseCustomer) -> list[JourneyOutput]:
    """The customer's journey moves to the pseudonym without any visitor id, so late refunds
    and codes still restate its orders exactly; their orders follow, their visitors are
    forgotten and the sink rewrites what ClickHouse holds.

    Credits and money are untouched: what influencers earned does not depend on who bought.
    """
    visitor_ids = set(command.visitor_ids)
    outputs: list[JourneyOutput] = []
    if journey is not None:
        visitor_ids.update(
            stored.touchpoint.visitor_id
            for stored in journey.clicks.values()
            if stored.touchpoint.visitor_id
        )
        adopted = Journey(
            command.pseudonym,
            {
                event_id: StoredClick(anonymous(stored.touchpoint), stored.linked_at)
                for event_id, stored in journey.clicks.items()
            },
            {
                order_id: replace(
                    order,
                    facts=replace(order.facts, customer_id=command.pseudonym),
                    codes=tuple(anonymous(code) for code in order.codes),
                )
                for order_id, order in journey.orders.items()
            },
            journey.newest_event_at,
        )
        outputs.append(AdoptJourney(command.pseudonym, journey_to_wire(adopted)))
        outputs.extend(forget_click_owners(stored.touchpoint for stored in journey.clicks.values()))
        outputs.extend(ReassignOrder(order_id, command.pseudonym) for order_id in journey.orders)
    outputs.extend(ForgetVisitor(visitor_id) for visitor_id in sorted(visitor_ids))
    outputs.append(
        CustomerErased(command.customer_id, command.pseudonym, tuple(sorted(visitor_ids)))
    )
    return outputs


# --- wire form of the state, for the changelog-backed table -----------------------


def journey_to_wire(journey: Journey) -> Wire:
    return {
        "u": journey.customer_id,
        "n": None if journey.newest_event_at is None else journey.newest_event_at.isoformat(),
        "clicks": [
            [
                stored.touchpoint.to_wire(),
                None if stored.linked_at is None else stored.linked_at.isoformat(),
            ]
            for stored in journey.clicks.values()
        ],
        "orders": [
            {
                "f": order.facts.to_wire(),
                "r": [refund.to_wire() for refund in order.refunds],
                "c": [code.to_wire() for code in order.codes],
                "v": order.version,
                "h": order.fingerprint,
                "k": sorted(_key_pairs(order.emitted_keys)),
            }
            for order in journey.orders.values()
        ],
    }


def journey_from_wire(wire: Wire) -> Journey:
    journey = Journey(
        wire["u"], newest_event_at=None if wire["n"] is None else datetime.fromisoformat(wire["n"])
    )
    for touchpoint_wire, linked_at in wire["clicks"]:
        touchpoint = Touchpoint.from_wire(touchpoint_wire)
        journey.clicks[touchpoint.event_id] = StoredClick(
            touchpoint, None if linked_at is None else datetime.fromisoformat(linked_at)
        )
    for order_wire in wire["orders"]:
        facts = OrderFacts.from_wire(order_wire["f"])
        journey.orders[facts.order_id] = OrderRecord(
            facts,
            tuple(RefundFacts.from_wire(refund) for refund in order_wire["r"]),
            tuple(Touchpoint.from_wire(code) for code in order_wire["c"]),
            order_wire["v"],
            order_wire["h"],
            _flat_keys((model, event_id) for model, event_id in order_wire["k"]),
        )
    return journey
