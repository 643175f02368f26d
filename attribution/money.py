"""Exact allocation of an amount over weighted parts (largest-remainder rounding)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_FLOOR, Decimal, localcontext

from schemas.currencies import minor_unit_digits

CREDIT_DIGITS = 18
CREDIT_QUANTUM = Decimal(1).scaleb(-CREDIT_DIGITS)
_WORKING_PRECISION = 60


def allocate(amount: Decimal, weights: Sequence[Decimal], quantum: Decimal) -> list[Decimal]:
    """Split `amount` in proportion to `weights`, each part a multiple of `quantum`.

    Every part is rounded down, then the leftover quanta go one each to the parts
    with the largest remainders (ties: earlier part first), so the parts sum
    exactly to `amount`.

    >>> allocate(Decimal("10.00"), [Decimal(1)] * 3, Decimal("0.01"))
    [Decimal('3.34'), Decimal('3.33'), Decimal('3.33')]
    """
    total_weight = sum(weights, Decimal(0))
    if total_weight <= 0:
        raise ValueError("weights must sum to a positive number")
    with localcontext() as context:
        context.prec = _WORKING_PRECISION
        exact = [amount * weight / total_weight for weight in weights]
        floors = [(part / quantum).to_integral_value(ROUND_FLOOR) * quantum for part in exact]
        leftover_quanta = int(((amount - sum(floors, Decimal(0))) / quantum).to_integral_value())
        by_remainder = sorted(
            range(len(exact)), key=lambda index: (-(exact[index] - floors[index]), index)
        )
        for index in by_remainder[:leftover_quanta]:
            floors[index] += quantum
    return [part.quantize(quantum) for part in floors]


def currency_quantum(currency: str) -> Decimal:
    """The value of one minor unit: 0.01 for USD, 1 for JPY, 0.001 for KWD."""
    return Decimal(1).scaleb(-minor_unit_digits(currency))


def split_credit(weights: Sequence[Decimal]) -> list[Decimal]:
    """Normalise weights to credits that sum exactly to 1 at 18 decimal places."""
    return allocate(Decimal(1), weights, CREDIT_QUANTUM)


def split_revenue(net_revenue: Decimal, credits: Sequence[Decimal], currency: str) -> list[Decimal]:
    """Revenue credit per touchpoint, in the currency's minor unit, summing to `net_revenue`."""
    return allocate(net_revenue, credits, currency_quantum(currency))
