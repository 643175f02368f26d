from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attribution.models import ALL_MODELS, Model, model_credits
from attribution.money import allocate, split_revenue

T = datetime(2026, 3, 15, tzinfo=UTC)
WEEK = timedelta(days=7)


def exponent(amount: Decimal) -> int:
    """The power of ten of the amount's last digit (-2 for cents); only finite amounts have one."""
    power = amount.as_tuple().exponent
    assert isinstance(power, int), f"{amount} is not a finite amount"
    return power


def test_largest_remainder_gives_leftover_cents_to_the_earliest_on_ties() -> None:
    # 10.00 / 3 = 3.333..: floors 3.33 x3 = 9.99, one cent left, all remainders equal -> first.
    assert split_revenue(Decimal("10.00"), [Decimal(1)] * 3, "USD") == [
        Decimal("3.34"),
        Decimal("3.33"),
        Decimal("3.33"),
    ]


def test_largest_remainder_prefers_the_biggest_remainder() -> None:
    # 1.00 x (0.125, 0.375, 0.5) = 0.125, 0.375, 0.5 -> floors 0.12, 0.37, 0.50 (sum 0.99);
    # remainders 0.005, 0.005, 0 -> tie between the first two, the earlier wins.
    weights = [Decimal("0.125"), Decimal("0.375"), Decimal("0.5")]
    assert split_revenue(Decimal("1.00"), weights, "USD") == [
        Decimal("0.13"),
        Decimal("0.37"),
        Decimal("0.50"),
    ]


def test_yen_has_no_minor_unit_and_dinar_has_three_digits() -> None:
    assert split_revenue(Decimal(1000), [Decimal(1)] * 3, "JPY") == [
        Decimal(334),
        Decimal(333),
        Decimal(333),
    ]
    assert split_revenue(Decimal("1.000"), [Decimal(1)] * 3, "KWD") == [
        Decimal("0.334"),
        Decimal("0.333"),
        Decimal("0.333"),
    ]


def test_position_based_splits_forty_twenty_forty() -> None:
    # n=4: 0.4 first, 0.4 last, 0.2 / 2 = 0.1 for each middle touchpoint.
    assert model_credits(Model.POSITION_BASED, [T] * 4, T, WEEK) == (
        Decimal("0.4"),
        Decimal("0.1"),
        Decimal("0.1"),
        Decimal("0.4"),
    )
    assert model_credits(Model.POSITION_BASED, [T] * 2, T, WEEK) == (Decimal("0.5"), Decimal("0.5"))


def test_position_based_middle_thirds_are_exact_to_the_last_digit() -> None:
    # n=5: 0.2 / 3 = 0.0666.. for each of three middles; at 18 decimals the floors are
    # 0.4 + 3 x 0.066666666666666666 + 0.4 = 0.999999999999999998, two units left over:
    # the middles have the largest remainders (2/3 of a unit), the first two of them get one.
    credits = model_credits(Model.POSITION_BASED, [T] * 5, T, WEEK)
    assert [str(credit) for credit in credits] == [
        "0.400000000000000000",
        "0.066666666666666667",
        "0.066666666666666667",
        "0.066666666666666666",
        "0.400000000000000000",
    ]


def test_time_decay_halves_per_half_life() -> None:
    # Touches 14 days and 7 days before the order: weights 1/4 and 1/2 -> credits 1/3, 2/3.
    credits = model_credits(Model.TIME_DECAY, [T - 2 * WEEK, T - WEEK], T, WEEK)
    assert credits == (Decimal("0.333333333333333333"), Decimal("0.666666666666666667"))


def test_first_and_last_click_take_everything() -> None:
    times = [T - timedelta(days=3), T - timedelta(days=2), T - timedelta(days=1)]
    assert model_credits(Model.FIRST_CLICK, times, T, WEEK)[0] == 1
    assert model_credits(Model.LAST_CLICK, times, T, WEEK)[-1] == 1


def test_allocation_refuses_zero_weights() -> None:
    with pytest.raises(ValueError):
        allocate(Decimal(1), [Decimal(0)], Decimal("0.01"))


@given(
    count=st.integers(min_value=1, max_value=50),
    cents=st.integers(min_value=0, max_value=10**12),
    ages=st.lists(st.integers(min_value=0, max_value=30 * 24 * 3600), min_size=50, max_size=50),
    currency=st.sampled_from(["USD", "JPY", "KWD", "EUR"]),
)
def test_credits_sum_to_one_and_revenue_to_the_cent(
    count: int, cents: int, ages: list[int], currency: str
) -> None:
    digits = {"USD": 2, "EUR": 2, "JPY": 0, "KWD": 3}[currency]
    net = Decimal(cents).scaleb(-digits)
    times = sorted(T - timedelta(seconds=age) for age in ages[:count])
    for model in ALL_MODELS:
        credits = model_credits(model, times, T, WEEK)
        assert sum(credits) == 1
        assert all(credit >= 0 for credit in credits)
        revenues = split_revenue(net, credits, currency)
        assert sum(revenues) == net
        assert all(exponent(revenue) >= -digits for revenue in revenues)
