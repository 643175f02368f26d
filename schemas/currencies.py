"""ISO 4217 currency codes and the number of digits of their minor unit, from the maintained
`iso4217` package (its table follows the ISO maintenance agency's list)."""

from __future__ import annotations

from iso4217 import Currency

# Withdrawn from ISO 4217 since 2024 (the package follows the current list), but orders of the
# months before are still in the histories storefronts backfill.
WITHDRAWN_MINOR_UNIT_DIGITS = {"ANG": 2, "BGN": 2, "CUC": 2, "SLL": 2, "ZWL": 2}

# Funds and metals (XAU, XDR, ...) have no minor unit: they are not currencies of an order.
MINOR_UNIT_DIGITS: dict[str, int] = {
    **WITHDRAWN_MINOR_UNIT_DIGITS,
    **{currency.code: currency.exponent for currency in Currency if currency.exponent is not None},
}


def minor_unit_digits(currency: str) -> int:
    """Digits after the decimal point of a currency's minor unit.

    >>> minor_unit_digits("JPY"), minor_unit_digits("USD"), minor_unit_digits("KWD")
    (0, 2, 3)
    """
    return MINOR_UNIT_DIGITS[currency]


def is_currency(code: str) -> bool:
    return code in MINOR_UNIT_DIGITS
