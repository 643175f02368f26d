"""Exact allocation of an amount over weighted parts (largest-remainder rounding).

Amounts are turned into whole quanta (cents, yen, 1e-18 of a credit) and weights into
integers, so the division and the remainders are exact integer arithmetic: no
rounding context can change a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Context, Decimal
from functools import lru_cache

from schemas.currencies import minor_unit_digits

CREDIT_DIGITS = 18
CREDIT_QUANTUM = Decimal(1).scaleb(-CREDIT_DIGITS)
_CREDIT_UNITS = 10**CREDIT_DIGITS
# Wide enough that scaling any weight or amount we accept to an integer never rounds.
_EXACT = Context(prec=200)


def allocate_units(total_units: int, weights: Sequence[int]) -> list[int]:
    """Split `total_units` whole quanta in proportion to integer `weights`.

    Every part is rounded down, then the leftover quanta go one each to the parts
    with the largest remainders (ties: earlier part first).

    >>> allocate_units(1000, [1, 1, 1])
    [334, 333, 333]
    """
    total_weight = sum(weights)
    if total_weight <= 0 or any(weight < 0 for weight in weights):
        raise ValueError("weights must be non-negative and sum to a positive number")
    quotients_and_remainders = [divmod(total_units * weight, total_weight) for weight in weights]
    parts = [quotient for quotient, _ in quotients_and_remainders]
    leftover = total_units - sum(parts)
    if leftover:
        by_remainder = sorted(
            range(len(parts)), key=lambda index: (-quotients_and_remainders[index][1], index)
        )
        for index in by_remainder[:leftover]:
            parts[index] += 1
    return parts


def integer_weights(weights: Sequence[Decimal]) -> list[int]:
    """Decimal weights as integers in the same exact proportions (a common power of ten)."""
    exponent = min(int(weight.as_tuple().exponent) for weight in weights)
    return [int(weight.scaleb(-exponent, _EXACT)) for weight in weights]


def allocate(amount: Decimal, weights: Sequence[Decimal], quantum: Decimal) -> list[Decimal]:
    """Split `amount` in proportion to `weights`, each part a multiple of `quantum`.

    >>> allocate(Decimal("10.00"), [Decimal(1)] * 3, Decimal("0.01"))
    [Decimal('3.34'), Decimal('3.33'), Decimal('3.33')]
    """
    digits = -int(quantum.as_tuple().exponent)
    return split_units(whole_units(amount, digits), integer_weights(weights), digits)


def split_units(amount_units: int, weights: Sequence[int], digits: int) -> list[Decimal]:
    """`amount_units` whole 10^-`digits` split in proportion to integer `weights`, as amounts.

    >>> split_units(1000, [1, 1, 1], 2)
    [Decimal('3.34'), Decimal('3.33'), Decimal('3.33')]
    """
    return [Decimal(part).scaleb(-digits) for part in allocate_units(amount_units, weights)]


def whole_units(amount: Decimal, digits: int) -> int:
    """`amount` as a whole number of 10^-`digits`; an error if it is not one.

    >>> whole_units(Decimal("12.30"), 2)
    1230
    """
    scaled = amount.scaleb(digits, _EXACT)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} is not a whole number of 10^-{digits}")
    return int(scaled)


def currency_quantum(currency: str) -> Decimal:
    """The value of one minor unit: 0.01 for USD, 1 for JPY, 0.001 for KWD."""
    return Decimal(1).scaleb(-minor_unit_digits(currency))


def split_credit_units(weights: Sequence[int]) -> list[Decimal]:
    """Credits in proportion to integer `weights`, summing exactly to 1 at 18 decimal places."""
    return list(credits_of_units(tuple(credit_units(weights))))


def credit_units(weights: Sequence[int]) -> list[int]:
    """Credits in proportion to integer `weights`, as whole 10^-18 summing to 10^18.

    >>> credit_units([1, 2]) == [333333333333333333, 666666666666666667]
    True
    """
    return allocate_units(_CREDIT_UNITS, weights)


@lru_cache(maxsize=1024)
def credits_of_units(units: tuple[int, ...]) -> tuple[Decimal, ...]:
    """Credits given as whole 10^-18 (`credit_units`), as decimals; the common splits of the
    count-based models are built once."""
    return tuple(Decimal(part).scaleb(-CREDIT_DIGITS) for part in units)


def split_revenue(net_revenue: Decimal, credits: Sequence[Decimal], currency: str) -> list[Decimal]:
    """Revenue credit per touchpoint, in the currency's minor unit, summing to `net_revenue`.

    >>> split_revenue(Decimal("1000"), [Decimal("0.5"), Decimal("0.5")], "JPY")
    [Decimal('500'), Decimal('500')]
    """
    return allocate(net_revenue, credits, currency_quantum(currency))
