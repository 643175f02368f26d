"""Category benchmarks from the campaign-strategy guide our users work from (2025-2026).

A campaign's conversion rate and AOV are judged against its category's range (the alert
rules in deploy/prometheus do it in a campaign's first 48 hours, when a shortfall is still
worth acting on).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class CategoryBenchmark:
    """Conversion rate as a fraction of clicks, AOV in USD."""

    conversion_low: Decimal
    conversion_high: Decimal
    aov_low: Decimal
    aov_high: Decimal


CATEGORY_BENCHMARKS: dict[str, CategoryBenchmark] = {
    "fashion": CategoryBenchmark(Decimal("0.02"), Decimal("0.05"), Decimal(35), Decimal(65)),
    "beauty": CategoryBenchmark(Decimal("0.03"), Decimal("0.07"), Decimal(45), Decimal(85)),
    "electronics": CategoryBenchmark(Decimal("0.01"), Decimal("0.03"), Decimal(150), Decimal(400)),
    "home": CategoryBenchmark(Decimal("0.02"), Decimal("0.04"), Decimal(50), Decimal(120)),
    "food": CategoryBenchmark(Decimal("0.04"), Decimal("0.08"), Decimal(25), Decimal(50)),
}
