""" "What if" scenarios: the same history attributed under other rules, compared with today's.

Pure: events come in, figures come out; `streams/scenario.py` reads histories and runs the parts
in processes. Three pieces:

- `split_by_identity` cuts a history into parts that can be attributed independently: every
  event that can influence another's credit (the same visitor, customer, order or IP address)
  lands in the same part, in its original relative order, so the union of the parts' credits is
  exactly the credits of the whole history attributed in one pipeline.
- `Tally` is what one attribution run adds up (credited revenue and conversions per model,
  influencer and campaign; valid clicks), mergeable across parts.
- `compare` turns today's and the scenario's tallies into rows per influencer and per campaign:
  credited revenue, conversions, ROAS and payout side by side with the difference.

`attribute_part` runs a part through `SharedStages`: the stages the scenario's settings cannot
change (traffic, orders, and the visitor stage when the lookback is the same) run once, and each
set of rules has its own journeys (`CreditLane`) that credit each order once, when its figures
are final, and only under the models compared.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter, defaultdict, deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, localcontext
from itertools import pairwise
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from attribution.catalog import Catalog, CreditTarget, InfluencerProfile
from attribution.fx import LockedRate
from attribution.identity import Visitor, apply_to_visitor
from attribution.journey import Journey, OrderRecord, apply_to_journey, credit_rows
from attribution.lateness import LatenessTracker
from attribution.ledger import Ledger, apply_to_ledger
from attribution.messages import (
    ORDER_COMMANDS,
    TRAFFIC_COMMANDS,
    VISITOR_COMMANDS,
    Command,
    OrderUpdated,
    TouchpointsArrived,
    VisitorCommand,
    order_key,
    traffic_key,
)
from attribution.models import ALL_MODELS, Model
from attribution.money import currency_quantum
from attribution.payouts import bonus_earned
from attribution.replay import LocalPipeline, keep_state
from attribution.routing import route_event
from attribution.rows import (
    ClickClassificationRow,
    CreditRow,
    IdentityConflict,
    IdentityLinked,
    OrderRow,
    Rejection,
    Row,
)
from attribution.rules import ClickPolicy, CodePolicy, Rules, same_day
from attribution.traffic import INVALID, Traffic, apply_to_traffic
from attribution.values import immutable
from schemas.catalog import CampaignRow, ContractRow
from schemas.events import Event, Order, Timestamp

# The event schema's own reading of a timestamp (lowercase RFC 3339 included): a click the
# pipeline accepts must be grouped with its address's other clicks.
_TIMESTAMP = TypeAdapter[datetime](Timestamp)
_PLAIN_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)
CONVERSIONS_QUANTUM = Decimal("0.000001")
ROAS_QUANTUM = Decimal("0.0001")


@dataclass(frozen=True)
class Overrides:
    """What a scenario changes; None keeps today's value."""

    lookback_days: float | None = None
    half_life_days: float | None = None
    code_policy: CodePolicy | None = None
    click_policy: ClickPolicy | None = None

    def __post_init__(self) -> None:
        for name in ("lookback_days", "half_life_days"):
            days = getattr(self, name)
            if days is not None and not days > 0:
                raise ValueError(f"{name.removesuffix('_days')} must be more than 0 days: {days}")

    def applied_to(self, rules: Rules) -> Rules:
        """`rules` with these changes.

        >>> Overrides(lookback_days=14).applied_to(Rules()).lookback.days
        14
        """
        changes: dict[str, Any] = {}
        if self.lookback_days is not None:
            changes["lookback"] = timedelta(days=self.lookback_days)
        if self.half_life_days is not None:
            changes["half_life"] = timedelta(days=self.half_life_days)
        if self.code_policy is not None:
            changes["code_policy"] = self.code_policy
        if self.click_policy is not None:
            changes["click_policy"] = self.click_policy
        return dataclasses.replace(rules, **changes)


def identity_keys(event: Mapping[str, Any]) -> list[str]:
    """What ties an event (a decoded JSON object) to others in a journey: its visitor, customer
    and order.

    >>> identity_keys({"type": "refund", "order_id": "o1"})
    ['o:o1']
    """
    keys = []
    for field_name, prefix in (("visitor_id", "v:"), ("customer_id", "c:"), ("order_id", "o:")):
        value = event.get(field_name)
        if isinstance(value, str) and value:
            keys.append(prefix + value)
    return keys


def _click_address(event: Mapping[str, Any]) -> tuple[str, datetime] | None:
    """A click's IP address and time, None for other events or without either.

    >>> address, moment = _click_address(
    ...     {"type": "click", "ip": "a", "occurred_at": "2026-01-01T00:00:00.5-05:00"})
    >>> address, moment.isoformat()
    ('a', '2026-01-01T00:00:00.500000-05:00')
    """
    address, occurred_at = event.get("ip"), event.get("occurred_at")
    if event.get("type") != "click" or not isinstance(address, str) or not address:
        return None
    if isinstance(occurred_at, str) and _PLAIN_RFC3339.fullmatch(occurred_at):
        # What storefronts send, read alike by both (pydantic's reading is ten times dearer);
        # a day or an hour out of range goes on to pydantic, which says why.
        try:
            return address, datetime.fromisoformat(occurred_at)
        except ValueError:
            pass
    try:
        return address, _TIMESTAMP.validate_python(occurred_at)
    except ValidationError:
        return None  # an invalid event: the pipeline rejects it wherever it lands


def identity_components(
    events: Sequence[Mapping[str, Any]], traffic_reach: timedelta | None
) -> list[int]:
    """Per event, the index of the first event of its connected component: events sharing a
    visitor, customer or order id, and clicks of one IP address less than `traffic_reach` apart
    (what the click rules compare; a chain of such clicks classifies along its length). None
    when no address is kept (no PII key): clicks then classify on their own.

    >>> identity_components([{"visitor_id": "v1"}, {"visitor_id": "v2"},
    ...     {"visitor_id": "v1", "customer_id": "c1"}, {"customer_id": "c1", "order_id": "o"}],
    ...     None)
    [0, 1, 0, 0]
    """
    parent = list(range(len(events)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def union(first: int, second: int) -> None:
        first, second = root(first), root(second)
        if first != second:
            parent[max(first, second)] = min(first, second)

    owner: dict[str, int] = {}
    clicks_by_address: defaultdict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for index, event in enumerate(events):
        for key in identity_keys(event):
            first = owner.setdefault(key, index)
            if first != index:
                union(first, index)
        if traffic_reach is not None and (click := _click_address(event)) is not None:
            address, moment = click
            clicks_by_address[address].append((moment, index))
    if traffic_reach is not None:
        for clicks in clicks_by_address.values():
            clicks.sort()
            for (moment, index), (next_moment, next_index) in pairwise(clicks):
                if next_moment - moment <= traffic_reach:
                    union(index, next_index)
    return [root(index) for index in range(len(events))]


def split_by_identity(
    events: Sequence[Mapping[str, Any]], parts: int, traffic_reach: timedelta | None
) -> list[list[int]]:
    """The indexes of `events` cut into at most `parts` parts of whole components
    (`identity_components`), each in ascending order (the history's own order), the biggest
    components placed first on the lightest part so that the parts are about the same size.

    >>> split_by_identity(
    ...     [{"customer_id": "a"}, {"customer_id": "b"}, {"customer_id": "a"}], 2, None)
    [[0, 2], [1]]
    """
    if parts < 1:
        raise ValueError(f"a history is split into at least 1 part, not {parts}")
    members: dict[int, list[int]] = defaultdict(list)
    for index, component in enumerate(identity_components(events, traffic_reach)):
        members[component].append(index)
    assigned: list[list[int]] = [[] for _ in range(parts)]
    sizes = [0] * parts
    for indexes in sorted(members.values(), key=lambda group: (-len(group), group[0])):
        lightest = min(range(parts), key=lambda part: (sizes[part], part))
        assigned[lightest].extend(indexes)
        sizes[lightest] += len(indexes)
    return [sorted(indexes) for indexes in assigned if indexes]


@immutable
class Credited:
    revenue: Decimal = Decimal(0)
    """Credited revenue net of refunds, in the reporting currency."""
    conversions: Decimal = Decimal(0)
    """The sum of credit (one order is one conversion, split over its touchpoints)."""

    def __add__(self, other: Credited) -> Credited:
        return Credited(self.revenue + other.revenue, self.conversions + other.conversions)


CreditedKey = tuple[str, str, str]
"""(model, influencer_id, campaign_id)"""


@dataclass
class Tally:
    """What one attribution run credited, in the reporting currency; parts of a history add up."""

    credited: dict[CreditedKey, Credited] = field(default_factory=dict)
    valid_clicks: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Influencer clicks not classified invalid, per (influencer, campaign): what a `clicks` or
    `conversion_rate` bonus counts."""
    orders_without_rate: set[str] = field(default_factory=set)
    """Orders whose day has no exchange rate yet: left out, as the KPI views leave them out."""

    def add_credits(self, rows: Iterable[CreditRow]) -> None:
        for row in rows:
            if row.is_deleted:
                continue
            if not row.reporting_currency:
                self.orders_without_rate.add(row.order_id)
                continue
            key = (row.model, row.influencer_id, row.campaign_id)
            known = self.credited.get(key, Credited())
            self.credited[key] = known + Credited(row.reporting_revenue_credit, row.credit)

    def add_clicks(self, classifications: Iterable[ClickClassificationRow]) -> None:
        for row in classifications:
            if row.status != INVALID:
                self.valid_clicks[(row.influencer_id, row.campaign_id)] += 1

    def merge(self, other: Tally) -> None:
        for key, credited in other.credited.items():
            self.credited[key] = self.credited.get(key, Credited()) + credited
        self.valid_clicks.update(other.valid_clicks)
        self.orders_without_rate |= other.orders_without_rate


class NewestClassifications:
    """Collects the newest classification of every click from the rows a pipeline emits (a late
    click reclassifies its neighbours at a higher version)."""

    def __init__(self) -> None:
        self.by_click: dict[str, ClickClassificationRow] = {}

    def __call__(self, rows: list[Row]) -> None:
        for row in rows:
            if isinstance(row, ClickClassificationRow):
                known = self.by_click.get(row.event_id)
                if known is None or row.version >= known.version:
                    self.by_click[row.event_id] = row


@dataclass(frozen=True)
class Contracts:
    """The catalog's contracts and campaigns, with the rate of each campaign's start into the
    reporting currency (fees, retainers and bonuses are in the campaign's currency)."""

    contracts: Sequence[ContractRow] = ()
    campaigns: Mapping[str, CampaignRow] = field(default_factory=dict)
    campaign_rates: Mapping[str, LockedRate] = field(default_factory=dict)
    reporting_currency: str = "USD"

    def factor(self, campaign_id: str) -> Decimal | None:
        """Reporting units per unit of the campaign's money; None when there is no such rate."""
        campaign = self.campaigns.get(campaign_id)
        if campaign is None:
            return None
        if campaign.currency == self.reporting_currency:
            return Decimal(1)
        rate = self.campaign_rates.get(campaign_id)
        return None if rate is None else rate.rate


@dataclass(frozen=True)
class Figures:
    revenue: Decimal
    conversions: Decimal
    payout: Decimal
    """What the contracts pay for these credits: post fees, retainer, commission and bonus,
    as the `contract_spend` view computes them over the whole history; the spend of ROAS."""

    @property
    def roas(self) -> Decimal | None:
        """Credited revenue / payout, truncated to 4 decimals like the KPI views; None without
        a payout."""
        if self.payout == 0:
            return None
        return (self.revenue / self.payout).quantize(ROAS_QUANTUM, rounding=ROUND_DOWN)


Level = Literal["influencer", "campaign"]


@dataclass(frozen=True)
class ComparisonRow:
    level: Level
    id: str
    """The influencer's or campaign's id; '' for the credit of unattributed orders."""
    today: Figures
    scenario: Figures

    def change(self, name: Literal["revenue", "conversions", "payout", "roas"]) -> Decimal | None:
        before, after = getattr(self.today, name), getattr(self.scenario, name)
        if before is None or after is None:
            return None
        difference: Decimal = after - before
        return difference


@dataclass(frozen=True)
class Comparison:
    model: str
    currency: str
    rows: list[ComparisonRow]
    orders_without_rate: int
    campaigns_without_rate: list[str]
    """Campaigns with contracts whose start has no rate into the reporting currency: their
    fees, retainers and bonuses are left out of the payouts."""


def _pair_figures(
    tally: Tally, model: str, contracts: Contracts
) -> tuple[dict[tuple[str, str], Figures], set[str]]:
    """Figures per (influencer, campaign); the exact payouts, not yet rounded."""
    figures: dict[tuple[str, str], Figures] = {}
    for (credited_model, influencer, campaign), credited in tally.credited.items():
        if credited_model == model:
            figures[(influencer, campaign)] = Figures(
                credited.revenue, credited.conversions, Decimal(0)
            )
    without_rate = set()
    with localcontext() as context:
        context.prec = 200
        for contract in contracts.contracts:
            pair = (contract.influencer_id, contract.campaign_id)
            paid_on = tally.credited.get(
                (contract.commission_model, *pair), Credited(Decimal(0), Decimal(0))
            )
            payout = contract.commission_rate * paid_on.revenue
            factor = contracts.factor(contract.campaign_id)
            if factor is None:
                without_rate.add(contract.campaign_id)
            else:
                payout += (contract.fee_per_post * contract.posts + contract.retainer) * factor
                if contract.bonus_metric == "revenue":
                    threshold = contract.bonus_threshold * factor
                    contract = contract.model_copy(update={"bonus_threshold": threshold})
                clicks = tally.valid_clicks.get(pair, 0)
                if bonus_earned(contract, clicks, paid_on.conversions, paid_on.revenue):
                    payout += contract.bonus_amount * factor
            known = figures.get(pair, Figures(Decimal(0), Decimal(0), Decimal(0)))
            figures[pair] = Figures(known.revenue, known.conversions, known.payout + payout)
    return figures, without_rate


def _rolled_up(
    pairs: Mapping[tuple[str, str], Figures], level: Level, currency: str
) -> dict[str, Figures]:
    """Figures per influencer (level "influencer") or campaign, payouts rounded half to even to
    the currency's minor unit and conversions to 6 decimals once summed; revenue (exact in the
    minor unit already) is written with as many decimals, so a zero reads 0.00 as the others."""
    sums: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 3)
    for (influencer, campaign), figures in pairs.items():
        key = influencer if level == "influencer" else campaign
        total = sums[key]
        total[0] += figures.revenue
        total[1] += figures.conversions
        total[2] += figures.payout
    quantum = currency_quantum(currency)
    return {
        key: Figures(
            revenue.quantize(quantum, rounding=ROUND_HALF_EVEN),
            conversions.quantize(CONVERSIONS_QUANTUM, rounding=ROUND_HALF_EVEN),
            payout.quantize(quantum, rounding=ROUND_HALF_EVEN),
        )
        for key, (revenue, conversions, payout) in sums.items()
    }


def compared_models(model: str, contracts: Contracts) -> set[Model]:
    """What `compare` reads: `model`'s credits and those the contracts pay commission on.

    >>> sorted(compared_models("linear", Contracts()))
    [<Model.LINEAR: 'linear'>]
    """
    return {Model(model)} | {Model(contract.commission_model) for contract in contracts.contracts}


def compare(today: Tally, scenario: Tally, model: str, contracts: Contracts) -> Comparison:
    """Today's and the scenario's figures per influencer, then per campaign, under `model`
    (payouts follow each contract's own commission model), ordered by id; '' is the credit of
    unattributed orders.

    Revenue is in the reporting currency (`contracts.reporting_currency`).
    """
    if model not in ALL_MODELS:
        raise ValueError(f"unknown model {model!r}; one of {', '.join(ALL_MODELS)}")
    today_pairs, today_missing = _pair_figures(today, model, contracts)
    scenario_pairs, scenario_missing = _pair_figures(scenario, model, contracts)
    quantum = currency_quantum(contracts.reporting_currency)
    # A zero with the quantum's exponent: 0.00, not 0.
    zero = Figures(quantum * 0, CONVERSIONS_QUANTUM * 0, quantum * 0)
    rows = []
    levels: tuple[Level, ...] = ("influencer", "campaign")
    for level in levels:
        before = _rolled_up(today_pairs, level, contracts.reporting_currency)
        after = _rolled_up(scenario_pairs, level, contracts.reporting_currency)
        rows += [
            ComparisonRow(level, key, before.get(key, zero), after.get(key, zero))
            for key in sorted(before.keys() | after.keys())
        ]
    return Comparison(
        model,
        contracts.reporting_currency,
        rows,
        len(today.orders_without_rate | scenario.orders_without_rate),
        sorted(today_missing | scenario_missing),
    )


@dataclass
class PartOutcome:
    """One part of a history attributed under today's rules and the scenario's."""

    today: Tally
    scenario: Tally
    rejected_events: int = 0
    late_events: Counter[str] = field(default_factory=Counter)
    final_rows: list[CreditRow | OrderRow] = field(default_factory=list)
    """The scenario's final credit and order rows, when asked for (restatement)."""


class OrderRatesCatalog:
    """A catalog whose exchange rate for the order being fed is the one that order was stored
    with: a history read back from ClickHouse keeps each order's locked rate, whatever rates
    were published later."""

    def __init__(self, catalog: Catalog, order_rates: Mapping[str, LockedRate]) -> None:
        self.catalog = catalog
        self.order_rates = order_rates
        self.feeding: LockedRate | None = None
        """The stored rate of the order event being fed, if it has one."""

    def influencer(self, influencer_id: str) -> InfluencerProfile | None:
        return self.catalog.influencer(influencer_id)

    def link(self, link_id: str) -> CreditTarget | None:
        return self.catalog.link(link_id)

    def code(self, code: str) -> CreditTarget | None:
        return self.catalog.code(code)

    def code_policy(self, campaign_id: str) -> str:
        return self.catalog.code_policy(campaign_id)

    def exchange_rate(self, currency: str, day: date) -> LockedRate | None:
        return self.feeding or self.catalog.exchange_rate(currency, day)


def attribute(
    events: Iterable[Event],
    catalog: Catalog,
    rules: Rules,
    pii_key: bytes,
    order_rates: Mapping[str, LockedRate] | None = None,
) -> tuple[LocalPipeline, Tally]:
    """The events through the whole pipeline, in their order, and what it credited; an order
    in `order_rates` (by order id) is locked at that rate."""
    classifications = NewestClassifications()
    relocking = OrderRatesCatalog(catalog, order_rates or {})
    pipeline = LocalPipeline(relocking, rules, pii_key=pii_key, on_rows=classifications)
    for event in events:
        stored = relocking.order_rates.get(event.order_id) if isinstance(event, Order) else None
        relocking.feeding = stored
        pipeline.feed(event)
    relocking.feeding = None
    tally = Tally()
    tally.add_credits(pipeline.final_credits())
    tally.add_clicks(classifications.by_click.values())
    return pipeline, tally


# What an Overrides can change: only the journey stage reads these, and the visitor stage the
# lookback (through `touchpoint_retention`).
JOURNEY_RULES = ("lookback", "half_life", "code_policy", "click_policy")


class CreditLane:
    """The journey stage under one set of rules, crediting each order once its figures are
    final: at the end of the history, or before the journey forgets it.

    Its journeys defer credit (restating only marks an order), which gives the credits the
    straightforward pipeline ends with: an order is restated whenever anything its credit reads
    changes, and the journey keeps every click an order it still holds may be credited to.
    """

    def __init__(self, rules: Rules, models: Sequence[Model]) -> None:
        self.rules = rules
        self.models = models
        self.journeys: dict[str, Journey] = {}
        self.tally = Tally()

    def apply(self, command: TouchpointsArrived | OrderUpdated) -> None:
        if isinstance(command, TouchpointsArrived):
            key = command.customer_id
            moment = max((tp.occurred_at for tp in command.touchpoints), default=None)
        else:
            key = command.order.customer_id
            moment = command.order.occurred_at
        journey = self.journeys.get(key)
        if journey is None:
            journey = self.journeys[key] = Journey(key, defers_credit=True)
        elif moment is not None:
            self._credit_before_pruning(journey, moment)
        # Deferring, the journey emits nothing: only an erasure has other outputs.
        apply_to_journey(journey, command, self.rules)

    def _credit_before_pruning(self, journey: Journey, moment: datetime) -> None:
        """Credit the pending orders the journey forgets when its clock moves to `moment`
        (attribution.journey._advance_clock prunes on the first event of a new day)."""
        newest = journey.newest_event_at
        if newest is None or moment <= newest or same_day(newest, moment):
            return
        oldest_kept = moment - self.rules.order_retention
        for order in journey.orders.values():
            if order.credit_pending and order.facts.occurred_at < oldest_kept:
                self._credit(journey, order)

    def _credit(self, journey: Journey, order: OrderRecord) -> None:
        self.tally.add_credits(credit_rows(journey, order, self.rules, order.version, self.models))
        order.credit_pending = False

    def final_tally(self) -> Tally:
        for journey in self.journeys.values():
            for order in journey.orders.values():
                if order.credit_pending:
                    self._credit(journey, order)
        return self.tally


class SharedStages:
    """The pipeline of `attribution.replay.LocalPipeline` feeding several `CreditLane`s: the
    traffic and order stages run once, the visitor stage once per distinct lookback (what it
    keeps waiting clicks for), each lane's journeys on their own.

    The commands run first in first out as in LocalPipeline; the journey stage emits nothing
    the others read, so a lane applies its commands as they are produced, in the same order.
    """

    def __init__(self, catalog: Catalog, lanes: Sequence[CreditLane], pii_key: bytes) -> None:
        shared = lanes[0].rules
        if any(_shared_rules(lane.rules) != _shared_rules(shared) for lane in lanes):
            raise ValueError("lanes may differ only in the rules of the journey stage")
        self.catalog = catalog
        self.rules = shared
        self.pii_key = pii_key
        self.traffic: dict[str, Traffic] = {}
        self.ledgers: dict[str, Ledger] = {}
        by_retention: dict[timedelta, list[CreditLane]] = defaultdict(list)
        for lane in lanes:
            by_retention[lane.rules.touchpoint_retention].append(lane)
        self.visitor_stages: list[tuple[Rules, dict[str, Visitor], list[CreditLane]]] = [
            (group[0].rules, {}, group) for group in by_retention.values()
        ]
        self.lanes = lanes
        self.classifications = NewestClassifications()
        self.rejections: list[Rejection] = []
        self.late_events: Counter[str] = Counter()
        self._lateness = LatenessTracker(shared.allowed_lateness)

    def feed(self, event: Event) -> None:
        if self._lateness.observe(event.occurred_at):
            self.late_events[event.type] += 1
        routed = route_event(event, self.catalog, self.pii_key)
        # A click that skips the traffic stage (no key, or a known crawler) is classified here.
        self.classifications(routed.rows)
        queue: deque[Command] = deque([*routed.to_traffic, *routed.to_visitors, *routed.to_orders])
        while queue:
            command = queue.popleft()
            if isinstance(command, TRAFFIC_COMMANDS):
                key = traffic_key(command)
                traffic, traffic_outputs = apply_to_traffic(
                    self.traffic.get(key), command, self.rules
                )
                keep_state(self.traffic, key, traffic)
                for output in traffic_outputs:
                    if isinstance(output, ClickClassificationRow):
                        self.classifications([output])
                    else:
                        queue.append(output)
            elif isinstance(command, ORDER_COMMANDS):
                key = order_key(command)
                ledger, ledger_outputs = apply_to_ledger(self.ledgers.get(key), command, self.rules)
                keep_state(self.ledgers, key, ledger)
                for ledger_output in ledger_outputs:
                    if isinstance(ledger_output, OrderUpdated):
                        for lane in self.lanes:
                            lane.apply(ledger_output)
                    elif isinstance(ledger_output, Rejection):
                        self.rejections.append(ledger_output)
            elif isinstance(command, VISITOR_COMMANDS):
                self._to_visitors(command)

    def _to_visitors(self, command: VisitorCommand) -> None:
        for rules, visitors, lanes in self.visitor_stages:
            key = command.visitor_id
            visitor, outputs = apply_to_visitor(visitors.get(key), command, rules)
            keep_state(visitors, key, visitor)
            for output in outputs:
                if isinstance(output, TouchpointsArrived):
                    for lane in lanes:
                        lane.apply(output)
                elif not isinstance(output, IdentityLinked | IdentityConflict):
                    raise ValueError(f"only an erasure makes a visitor send {output!r}")


def _shared_rules(rules: Rules) -> dict[str, Any]:
    return {
        rule.name: getattr(rules, rule.name)
        for rule in dataclasses.fields(rules)
        if rule.name not in JOURNEY_RULES
    }


def attribute_part(
    events: Sequence[Event],
    catalog: Catalog,
    today: Rules,
    scenario: Rules,
    pii_key: bytes,
    *,
    keep_rows: bool = False,
    order_rates: Mapping[str, LockedRate] | None = None,
    models: Collection[Model] = ALL_MODELS,
) -> PartOutcome:
    """A part under both rules, the tallies holding `models`' credits (every model's with
    `keep_rows`, whose final rows are the scenario's); the scenario run alone when the rules
    are the same."""
    if not keep_rows:
        return _attribute_shared(events, catalog, today, scenario, pii_key, order_rates, models)
    scenario_pipeline, scenario_tally = attribute(events, catalog, scenario, pii_key, order_rates)
    today_tally = (
        scenario_tally
        if today == scenario
        else attribute(events, catalog, today, pii_key, order_rates)[1]
    )
    rows: list[CreditRow | OrderRow] = [
        *scenario_pipeline.credits.values(),
        *scenario_pipeline.orders.values(),
    ]
    return PartOutcome(
        today_tally,
        scenario_tally,
        len(scenario_pipeline.rejections),
        scenario_pipeline.late_events,
        rows,
    )


def _attribute_shared(
    events: Iterable[Event],
    catalog: Catalog,
    today: Rules,
    scenario: Rules,
    pii_key: bytes,
    order_rates: Mapping[str, LockedRate] | None,
    models: Collection[Model],
) -> PartOutcome:
    ordered_models = [model for model in ALL_MODELS if model in models]
    scenario_lane = CreditLane(scenario, ordered_models)
    lanes = (
        [scenario_lane] if today == scenario else [CreditLane(today, ordered_models), scenario_lane]
    )
    relocking = OrderRatesCatalog(catalog, order_rates or {})
    stages = SharedStages(relocking, lanes, pii_key)
    for event in events:
        relocking.feeding = (
            relocking.order_rates.get(event.order_id) if isinstance(event, Order) else None
        )
        stages.feed(event)
    relocking.feeding = None
    for lane in lanes:
        lane.final_tally().add_clicks(stages.classifications.by_click.values())
    return PartOutcome(
        lanes[0].tally, scenario_lane.tally, len(stages.rejections), stages.late_events
    )
