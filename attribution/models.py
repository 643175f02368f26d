"""The five attribution models of contract section 5, as credits over ordered touchpoints."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Context, Decimal
from enum import StrEnum
from functools import lru_cache

from attribution.money import credit_units, credits_of_units, integer_weights


class Model(StrEnum):
    FIRST_CLICK = "first_click"
    LAST_CLICK = "last_click"
    LINEAR = "linear"
    POSITION_BASED = "position_based"
    TIME_DECAY = "time_decay"


ALL_MODELS: tuple[Model, ...] = tuple(Model)

# 2^x is computed as exp(x ln 2): Decimal's exp is ten times faster than its
# non-integer power, and 32 digits leave the 18-decimal credits far from any doubt.
_DECAY_CONTEXT = Context(prec=32)
_LN2 = Decimal(2).ln(Context(prec=40))
_MICROSECOND = timedelta(microseconds=1)


def count_weights(model: Model, count: int) -> list[int]:
    """Integer weights of the models that depend only on the number of touchpoints.

    Position-based is scaled by (count - 2) so its 2/5, 1/5, 2/5 split stays exact.

    >>> count_weights(Model.POSITION_BASED, 5)
    [6, 1, 1, 1, 6]
    """
    if model is Model.FIRST_CLICK:
        return [1] + [0] * (count - 1)
    if model is Model.LAST_CLICK:
        return [0] * (count - 1) + [1]
    if model is Model.POSITION_BASED and count > 2:
        ends = 2 * (count - 2)
        return [ends] + [1] * (count - 2) + [ends]
    if model in (Model.LINEAR, Model.POSITION_BASED):
        return [1] * count
    raise ValueError(f"{model} does not depend on the touchpoint count alone")


@lru_cache(maxsize=512)
def _count_credit_units(model: Model, count: int) -> tuple[int, ...]:
    return tuple(credit_units(count_weights(model, count)))


def time_decay_weights(
    touch_times: Sequence[datetime], order_time: datetime, half_life: timedelta
) -> list[Decimal]:
    """2^(-(T - t_i) / half_life) for each touchpoint, t_i capped at T."""
    half_life_us = half_life // _MICROSECOND
    return [
        _decay(max(order_time - moment, timedelta(0)) // _MICROSECOND, half_life_us)
        for moment in touch_times
    ]


# An order is credited again whenever its journey changes, with the same touchpoints mostly.
@lru_cache(maxsize=8192)
def _decay(age_us: int, half_life_us: int) -> Decimal:
    context = _DECAY_CONTEXT
    return context.exp(
        context.multiply(context.divide(-Decimal(age_us), Decimal(half_life_us)), _LN2)
    )


def model_credits(
    model: Model,
    touch_times: Sequence[datetime],
    order_time: datetime,
    half_life: timedelta,
) -> tuple[Decimal, ...]:
    """Credits of `model` over touchpoints already in journey order, summing exactly to 1.

    >>> from datetime import UTC
    >>> t = datetime(2026, 1, 8, tzinfo=UTC)
    >>> [str(credit) for credit in model_credits(Model.POSITION_BASED, [t] * 3, t, timedelta(7))]
    ['0.400000000000000000', '0.200000000000000000', '0.400000000000000000']
    """
    return credits_of_units(model_credit_units(model, touch_times, order_time, half_life))


def model_credit_units(
    model: Model,
    touch_times: Sequence[datetime],
    order_time: datetime,
    half_life: timedelta,
) -> tuple[int, ...]:
    """`model_credits` as whole 10^-18 of a conversion, summing to 10^18: what revenue is split
    by, without turning the credits back into integers."""
    if not touch_times:
        raise ValueError("a model needs at least one touchpoint")
    if model is Model.TIME_DECAY and len(touch_times) > 1:
        weights = integer_weights(time_decay_weights(touch_times, order_time, half_life))
        return tuple(credit_units(weights))
    count_model = Model.LINEAR if model is Model.TIME_DECAY else model
    return _count_credit_units(count_model, len(touch_times))
