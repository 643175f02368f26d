"""Payout statements per influencer, currency and calendar month, and how months close.

Pure: the inputs are what ClickHouse holds now (`sinks/payouts.py` reads them) and the time is
passed in. A period is a calendar month in UTC. Once its lock date has passed a period closes: its
statements are stored and never change again, and whatever later restates a closed period (a
refund, a late click) is paid through the adjustment line of the first period after the last
closed one, so that all statements together always add up to what is owed now. Every rule, with
a worked example: docs/payouts.md.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Literal

from attribution.fx import LockedRate
from attribution.money import currency_quantum
from schemas.catalog import CampaignRow, ContractRow

LineKind = Literal["commission", "post_fees", "retainer", "bonus", "adjustment"]
# A campaign's lines appear in this order; the adjustment line comes after every campaign.
LINE_ORDER: tuple[LineKind, ...] = ("commission", "post_fees", "retainer", "bonus", "adjustment")
# The statement key: one statement per influencer and currency in a period.
StatementKey = tuple[str, str]

# Wide enough that no product or sum of the amounts we accept is ever rounded.
_EXACT = Context(prec=200)
_PERIOD_NAME = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True, order=True)
class Period:
    """A calendar month in UTC, named "YYYY-MM".

    >>> period = Period.parse("2026-11")
    >>> period.start.isoformat(), period.end.isoformat()
    ('2026-11-01T00:00:00+00:00', '2026-12-01T00:00:00+00:00')
    >>> period.lock_date(30).isoformat()
    '2026-12-31T00:00:00+00:00'
    """

    year: int
    month: int

    def __post_init__(self) -> None:
        if not (1 <= self.year <= 9998 and 1 <= self.month <= 12):
            raise ValueError(f"no such period: {self.year}-{self.month}")

    @classmethod
    def parse(cls, name: str) -> Period:
        match = _PERIOD_NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"a period is a month written YYYY-MM, not {name!r}")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def containing(cls, instant: datetime) -> Period:
        if instant.utcoffset() is None:
            raise ValueError(f"{instant} has no UTC offset")
        utc = instant.astimezone(UTC)
        return cls(utc.year, utc.month)

    @property
    def name(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def __str__(self) -> str:
        return self.name

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the period."""
        return self.next().start

    def next(self) -> Period:
        return Period(self.year + 1, 1) if self.month == 12 else Period(self.year, self.month + 1)

    def lock_date(self, lock_days: int) -> datetime:
        """From this instant on the period is closed: its end plus `lock_days` days."""
        return self.end + timedelta(days=lock_days)


def periods_to_close(
    last_closed: Period | None, first_due: Period | None, as_of: datetime, lock_days: int
) -> list[Period]:
    """The periods a run at `as_of` closes, oldest first: every period after the last closed one
    (from the first period anything is due in when none is closed yet) whose lock date has
    passed.

    >>> at = datetime(2027, 1, 2, tzinfo=UTC)
    >>> [str(period) for period in periods_to_close(Period(2026, 9), None, at, 30)]
    ['2026-10', '2026-11']
    """
    if as_of.utcoffset() is None:
        raise ValueError(f"{as_of} has no UTC offset")
    period = last_closed.next() if last_closed is not None else first_due
    due = []
    while period is not None and period.lock_date(lock_days) <= as_of:
        due.append(period)
        period = period.next()
    return due


@dataclass(frozen=True)
class Credited:
    """What an influencer was credited for a campaign under one model, in one currency, on the
    orders placed in one period: revenue credit (net of refunds) and credit (conversions)."""

    influencer_id: str
    campaign_id: str
    model: str
    currency: str
    period: Period
    revenue: Decimal
    conversions: Decimal


@dataclass(frozen=True)
class PayoutInputs:
    """Everything a statement is computed from, as ClickHouse holds it now: the newest catalog's
    contracts and campaigns, credits and clicks per influencer and campaign."""

    contracts: Sequence[ContractRow]
    campaigns: Mapping[str, CampaignRow]
    credited: Sequence[Credited]
    clicks: Mapping[tuple[str, str], int]
    campaign_rates: Mapping[str, LockedRate] = field(default_factory=dict)
    """The rate of each campaign's start into the reporting currency (the view `campaign_fx`):
    its fees, retainer, bonus and revenue threshold are paid in the reporting currency, like
    the commission. A campaign without one pays them in its own currency."""


@dataclass(frozen=True)
class Line:
    """A statement line: `exact` as computed, `amount` in the currency's minor unit."""

    campaign_id: str  # '' on the adjustment line
    kind: LineKind
    commission_model: str  # the model a commission or bonus is paid on; '' for fixed fees
    exact: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Statement:
    period: Period
    influencer_id: str
    currency: str
    lines: tuple[Line, ...]
    closed: bool

    @property
    def key(self) -> StatementKey:
        return self.influencer_id, self.currency

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))


@dataclass(frozen=True)
class _Due:
    """An exact amount a contract makes due in a period, before any rounding."""

    period: Period
    key: StatementKey
    campaign_id: str
    kind: LineKind
    commission_model: str
    exact: Decimal


def bonus_earned(
    contract: ContractRow, clicks: int, conversions: Decimal, revenue: Decimal
) -> bool:
    """The rule of the `contract_spend` view: the metric, over every credit of the campaign
    under the commission model, exceeds the threshold. The conversion rate is a percentage
    truncated to 6 decimals (0 without clicks); another metric never pays.

    >>> contract = ContractRow(influencer_id="a", campaign_id="c", bonus_metric="conversion_rate",
    ...                        bonus_threshold=Decimal(2))
    >>> bonus_earned(contract, 3, Decimal("0.06"), Decimal(0))  # 2.000000 is not above 2
    False
    """
    metric, threshold = contract.bonus_metric, contract.bonus_threshold
    if metric == "conversion_rate":
        if clicks == 0:
            return False  # a rate of 0 never exceeds a threshold, which is never negative
        truncating = Context(prec=200, rounding=ROUND_DOWN)
        rate = truncating.divide(100 * conversions, Decimal(clicks))
        return rate.quantize(Decimal("0.000001"), rounding=ROUND_DOWN) > threshold
    if metric == "conversions":
        return conversions > threshold
    if metric == "revenue":
        return revenue > threshold
    if metric == "clicks":
        return clicks > threshold
    return False


def _dues(inputs: PayoutInputs) -> Iterator[_Due]:
    """Every exact amount due under the contracts, in the period it falls due in: commission on
    the orders of each period, post fees and retainer in the campaign's first period, the bonus
    in its last. A contract whose campaign is not in the catalog has no dates: only its
    commission falls due."""
    credited: dict[tuple[str, str, str], list[Credited]] = defaultdict(list)
    for row in inputs.credited:
        credited[(row.influencer_id, row.campaign_id, row.model)].append(row)
    with localcontext(_EXACT):
        for contract in inputs.contracts:
            model = contract.commission_model
            influencer, campaign_id = contract.influencer_id, contract.campaign_id
            own = credited[(influencer, campaign_id, model)]
            for row in own:
                yield _Due(
                    row.period,
                    (influencer, row.currency),
                    campaign_id,
                    "commission",
                    model,
                    contract.commission_rate * row.revenue,
                )
            campaign = inputs.campaigns.get(campaign_id)
            if campaign is None:
                continue
            rate = inputs.campaign_rates.get(campaign_id)
            if rate is None:
                key, factor = (influencer, campaign.currency), Decimal(1)
            else:
                key, factor = (influencer, rate.reporting_currency), rate.rate
            starts = Period.containing(campaign.starts_at)
            fees = contract.fee_per_post * contract.posts * factor
            yield _Due(starts, key, campaign_id, "post_fees", "", fees)
            yield _Due(starts, key, campaign_id, "retainer", "", contract.retainer * factor)
            clicks = inputs.clicks.get((influencer, campaign_id), 0)
            conversions = sum((row.conversions for row in own), Decimal(0))
            revenue = sum((row.revenue for row in own), Decimal(0))
            if contract.bonus_metric == "revenue":
                # The threshold is in the campaign's currency, the credited revenue is not.
                contract = contract.model_copy(
                    update={"bonus_threshold": contract.bonus_threshold * factor}
                )
            if bonus_earned(contract, clicks, conversions, revenue):
                ends = Period.containing(campaign.ends_at)
                bonus = contract.bonus_amount * factor
                yield _Due(ends, key, campaign_id, "bonus", model, bonus)


def first_due(inputs: PayoutInputs) -> Period | None:
    """The first period anything is due in; None when nothing is."""
    return min((due.period for due in _dues(inputs) if due.exact != 0), default=None)


def value_before(inputs: PayoutInputs, period: Period) -> dict[StatementKey, Decimal]:
    """The exact value, as of now, of everything due in the periods before `period`."""
    value: dict[StatementKey, Decimal] = defaultdict(Decimal)
    with localcontext(_EXACT):
        for due in _dues(inputs):
            if due.period < period:
                value[due.key] += due.exact
    return dict(value)


def adjustments(
    inputs: PayoutInputs, period: Period, paid: Mapping[StatementKey, Decimal]
) -> dict[StatementKey, Decimal]:
    """What `period` must add so that every statement up to it adds up to what is owed now: the
    current value of the (closed) periods before it minus what their statements paid."""
    value = value_before(inputs, period)
    with localcontext(_EXACT):
        return {
            key: value.get(key, Decimal(0)) - paid.get(key, Decimal(0))
            for key in sorted(value.keys() | paid.keys())
        }


def allocate_lines(exact: Sequence[Decimal], currency: str) -> list[Decimal]:
    """Amounts in the currency's minor unit that sum to the exact total rounded half to even:
    every line is rounded down, then the minor units left go one each to the lines with the
    largest remainders (ties: earlier line first). Lines may be negative (adjustments).

    >>> allocate_lines([Decimal("10.004"), Decimal("20.003"), Decimal("30.008")], "USD")
    [Decimal('10.01'), Decimal('20.00'), Decimal('30.01')]
    """
    quantum = currency_quantum(currency)
    digits = -int(quantum.as_tuple().exponent)
    with localcontext(_EXACT):
        # Half to even: what a statement leaves unpaid is at most half a minor unit, which on
        # its own rounds to 0; rounding halves up would pay it back and forth every month.
        total = sum(exact, Decimal(0)).quantize(quantum, rounding=ROUND_HALF_EVEN)
        units = [amount.scaleb(digits) for amount in exact]
        floors = [int(unit.to_integral_value(rounding=ROUND_FLOOR)) for unit in units]
        remainders = [unit - floor for unit, floor in zip(units, floors, strict=True)]
        leftover = int(total.scaleb(digits)) - sum(floors)
        by_remainder = sorted(range(len(units)), key=lambda index: (-remainders[index], index))
        for index in by_remainder[:leftover]:
            floors[index] += 1
        return [Decimal(floor).scaleb(-digits) for floor in floors]


def statements(
    inputs: PayoutInputs,
    period: Period,
    adjustment: Mapping[StatementKey, Decimal],
    *,
    closed: bool,
) -> list[Statement]:
    """The statements of `period`, one per influencer and currency with anything to pay, ordered
    by influencer and currency. A line whose amount comes to 0 is left out, and so is a statement
    without lines: what they held stays in the value the next adjustment pays."""
    exact: dict[StatementKey, dict[tuple[str, LineKind, str], Decimal]] = defaultdict(
        lambda: defaultdict(Decimal)
    )
    with localcontext(_EXACT):
        for due in _dues(inputs):
            if due.period == period:
                exact[due.key][(due.campaign_id, due.kind, due.commission_model)] += due.exact
        for key, amount in adjustment.items():
            exact[key][("", "adjustment", "")] += amount
    result = []
    for key in sorted(exact):
        due_lines = sorted(
            exact[key].items(),
            key=lambda item: (item[0][1] == "adjustment", item[0][0], LINE_ORDER.index(item[0][1])),
        )
        influencer, currency = key
        amounts = allocate_lines([amount for _, amount in due_lines], currency)
        lines = tuple(
            Line(campaign_id, kind, model, exact_amount, amount)
            for ((campaign_id, kind, model), exact_amount), amount in zip(
                due_lines, amounts, strict=True
            )
            if amount != 0
        )
        if lines:
            result.append(Statement(period, influencer, currency, lines, closed))
    return result


@dataclass(frozen=True)
class Closing:
    """A period closed by a run, with the statements to store for it (possibly none)."""

    period: Period
    statements: list[Statement]


def close_due(
    inputs: PayoutInputs,
    paid: Mapping[StatementKey, Decimal],
    last_closed: Period | None,
    as_of: datetime,
    lock_days: int,
) -> list[Closing]:
    """The periods whose lock date has passed at `as_of` and are not closed yet, oldest first,
    each with its final statements. `paid` is what every closed statement paid, per influencer
    and currency; each period closed here adds what its statements pay before the next."""
    paid_so_far: dict[StatementKey, Decimal] = defaultdict(Decimal, paid)
    closings = []
    for period in periods_to_close(last_closed, first_due(inputs), as_of, lock_days):
        owed = statements(inputs, period, adjustments(inputs, period, paid_so_far), closed=True)
        for statement in owed:
            paid_so_far[statement.key] += statement.total
        closings.append(Closing(period, owed))
    return closings


def open_statements(
    inputs: PayoutInputs,
    period: Period,
    paid: Mapping[StatementKey, Decimal],
    last_closed: Period | None,
) -> list[Statement]:
    """What the statements of an open period say now. Only the first period after the last
    closed one carries the adjustment: a later open period would count it a second time."""
    takes_adjustment = last_closed is not None and period == last_closed.next()
    adjustment = adjustments(inputs, period, paid) if takes_adjustment else {}
    return statements(inputs, period, adjustment, closed=False)
