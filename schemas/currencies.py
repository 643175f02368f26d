"""ISO 4217 currency codes and the number of digits of their minor unit, from the maintained
`iso4217` package (its table follows the ISO maintenance agency's list)."""

from __future__ import annotations

from iso4217 import Currency

# Funds and metals (XAU, XDR, ...) have no minor unit: they are not currencies of an order.
MINOR_UNIT_DIGITS: dict[str, int] = {
    currency.code: currency.exponent for currency in Currency if currency.exponent is not None
}


def minor_unit_digits(currency: str) -> int:
    """Digits after the decimal point of a currency's minor unit.

    >>> minor_unit_digits("JPY"), minor_unit_digits("USD"), minor_unit_digits("KWD")
    (0, 2, 3)
    """
    return MINOR_UNIT_DIGITS[currency]


def is_currency(code: str) -> bool:
    return code in MINOR_UNIT_DIGITS
