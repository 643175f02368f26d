"""Campaign KPIs as contract 6 defines them.

Conversion rate = credited conversions / clicks (a fraction here; x 100 for a percentage),
AOV = credited revenue / credited conversions. Pure: the caller passes the sums.
"""

from __future__ import annotations

from decimal import Decimal


def conversion_rate(conversions: Decimal, clicks: int) -> Decimal | None:
    """None without clicks: a rate of nothing is not zero.

    >>> conversion_rate(Decimal("3.5"), 100)
    Decimal('0.035')
    """
    return None if clicks == 0 else conversions / clicks


def average_order_value(revenue: Decimal, conversions: Decimal) -> Decimal | None:
    """
    >>> average_order_value(Decimal("120.00"), Decimal("2.5"))
    Decimal('48.0')
    """
    return None if conversions == 0 else revenue / conversions
