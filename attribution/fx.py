"""Exchange rates into the reporting currency, locked per order (contract: money, many currencies).

Rates are the European Central Bank's reference rates: units of each currency per euro, by
publication date. A cross rate goes through the euro on one publication date, in Decimal.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterator, Mapping
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal

from attribution.money import currency_quantum
from attribution.values import immutable

DEFAULT_REPORTING_CURRENCY = "USD"
RATE_DIGITS = 20
RATE_QUANTUM = Decimal(1).scaleb(-RATE_DIGITS)
# Enough digits that a cross rate of two six-digit ECB rates is exact to RATE_DIGITS places.
_RATE_CONTEXT = Context(prec=48)
MAX_RATE_AGE = timedelta(days=7)
"""The ECB publishes on working days; the longest gap (Easter) is four days. A rate older than
this is not a rate for the day."""
MAX_LOCKED_RATES_KEPT = 65_536
"""Currency-days whose locked rate is kept for the next order of the same currency and day
(some 30 currencies a day; the bound holds however scattered the days of a backfill are)."""

PerEuro = Mapping[date, Mapping[str, Decimal]]


@immutable
class LockedRate:
    """Reporting-currency units per unit of the order's currency, as published on `published_on`."""

    reporting_currency: str
    rate: Decimal
    published_on: date

    def convert(self, amount: Decimal) -> Decimal:
        """`amount` in the reporting currency, rounded half to even to its minor unit.

        >>> LockedRate("USD", Decimal("1.1172"), date(2026, 10, 30)).convert(Decimal("10.00"))
        Decimal('11.17')
        """
        return _RATE_CONTEXT.multiply(amount, self.rate).quantize(
            currency_quantum(self.reporting_currency), ROUND_HALF_EVEN
        )


class ExchangeRates:
    """Rates per euro by publication date, and the currency reports are in.

    >>> rates = ExchangeRates("USD", {date(2026, 10, 30): {"USD": Decimal("1.1172")}})
    >>> rates.lock("EUR", date(2026, 10, 30)).rate
    Decimal('1.11720000000000000000')
    >>> rates.lock("EUR", date(2026, 10, 31)) is None  # not published yet: no interpolation
    True
    """

    def __init__(self, reporting_currency: str, per_euro: PerEuro) -> None:
        self.reporting_currency = reporting_currency
        self._per_euro = per_euro
        self._dates = sorted(per_euro)
        # Orders of one currency and day share one rate: one object, computed once.
        self._locked: dict[tuple[str, date], LockedRate | None] = {}

    def currencies(self) -> set[str]:
        """Every currency an order can be converted from: the reporting one, and each the
        rates ever name (with the euro they are quoted in)."""
        named = {currency for row in self._per_euro.values() for currency in row}
        return {self.reporting_currency, "EUR", *named}

    @property
    def last_published(self) -> date | None:
        return self._dates[-1] if self._dates else None

    def overlaid(self, newer: PerEuro) -> ExchangeRates:
        """These rates with `newer` ones added; a currency newer publishes on a date wins."""
        merged: dict[date, dict[str, Decimal]] = {
            day: dict(row) for day, row in self._per_euro.items()
        }
        for day, row in newer.items():
            merged.setdefault(day, {}).update(row)
        return ExchangeRates(self.reporting_currency, merged)

    def lock(self, currency: str, day: date) -> LockedRate | None:
        """The rate of an order placed on `day`: the last one published on or before it.

        None while `day` is after the newest publication (the day's rate may still come), or
        when neither currency had a rate within `MAX_RATE_AGE` before it.
        """
        key = (currency, day)
        if key not in self._locked:
            if len(self._locked) >= MAX_LOCKED_RATES_KEPT:
                self._locked.clear()
            self._locked[key] = self._lock(currency, day)
        return self._locked[key]

    def _lock(self, currency: str, day: date) -> LockedRate | None:
        if currency == self.reporting_currency:
            return LockedRate(currency, Decimal(1), day)
        last = self.last_published
        if last is None or day > last:
            return None
        index = bisect.bisect_right(self._dates, day) - 1
        while index >= 0 and day - self._dates[index] <= MAX_RATE_AGE:
            published_on = self._dates[index]
            rate = self._cross_rate(published_on, currency)
            if rate is not None:
                return LockedRate(self.reporting_currency, rate, published_on)
            index -= 1
        return None

    def _cross_rate(self, published_on: date, currency: str) -> Decimal | None:
        row = self._per_euro[published_on]
        reporting = _per_euro_on(row, self.reporting_currency)
        source = _per_euro_on(row, currency)
        if reporting is None or source is None:
            return None
        return _RATE_CONTEXT.divide(reporting, source).quantize(RATE_QUANTUM, ROUND_HALF_EVEN)

    def cross_rates(
        self, published_on_days: Collection[date] | None = None
    ) -> Iterator[tuple[date, str, Decimal]]:
        """Every (publication date, currency, rate into the reporting currency), of the days
        `published_on_days` only when given."""
        days = (
            self._dates
            if published_on_days is None
            else sorted(day for day in published_on_days if day in self._per_euro)
        )
        for published_on in days:
            currencies = {"EUR", *self._per_euro[published_on]}
            for currency in sorted(currencies):
                rate = self._cross_rate(published_on, currency)
                if rate is not None:
                    yield published_on, currency, rate


def _per_euro_on(row: Mapping[str, Decimal], currency: str) -> Decimal | None:
    return Decimal(1) if currency == "EUR" else row.get(currency)


def days_changed(before: PerEuro, after: PerEuro) -> set[date]:
    """The publication days whose rates differ between two sets of rates: a cross rate reads
    one day's rates only, so only these days' cross rates can differ.

    >>> days_changed({date(2026, 1, 2): {"USD": Decimal("1.1")}},
    ...              {date(2026, 1, 2): {"USD": Decimal("1.1")}, date(2026, 1, 5): {}})
    {datetime.date(2026, 1, 5)}
    """
    return {day for day in before.keys() | after.keys() if before.get(day) != after.get(day)}
