"""The five attribution models of SPEC section 5, as weights over ordered touchpoints."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from enum import StrEnum


class Model(StrEnum):
    FIRST_CLICK = "first_click"
    LAST_CLICK = "last_click"
    LINEAR = "linear"
    POSITION_BASED = "position_based"
    TIME_DECAY = "time_decay"


ALL_MODELS: tuple[Model, ...] = tuple(Model)

_ONE = Decimal(1)
_ZERO = Decimal(0)
_TWO = Decimal(2)


def _first_click(count: int) -> list[Decimal]:
    return [_ONE] + [_ZERO] * (count - 1)


def _last_click(count: int) -> list[Decimal]:
    return [_ZERO] * (count - 1) + [_ONE]


def _linear(count: int) -> list[Decimal]:
    return [_ONE] * count


def _position_based(count: int) -> list[Decimal]:
    if count <= 2:
        return [_ONE] * count
    # Weights in fifths: 2/5 first, 2/5 last, 1/5 spread over the middle.
    middle = Decimal(1) / Decimal(count - 2)
    return [_TWO] + [middle] * (count - 2) + [_TWO]


def time_decay_weights(
    touch_times: Sequence[datetime], order_time: datetime, half_life: timedelta
) -> list[Decimal]:
    """2^(-(T - t_i) / half_life) for each touchpoint, t_i capped at T."""
    half_life_us = Decimal(half_life // timedelta(microseconds=1))
    with localcontext() as context:
        context.prec = 40
        return [
            _TWO
            ** (
                -Decimal(max(order_time - moment, timedelta(0)) // timedelta(microseconds=1))
                / half_life_us
            )
            for moment in touch_times
        ]


_COUNT_MODELS: dict[Model, Callable[[int], list[Decimal]]] = {
    Model.FIRST_CLICK: _first_click,
    Model.LAST_CLICK: _last_click,
    Model.LINEAR: _linear,
    Model.POSITION_BASED: _position_based,
}


def model_weights(
    model: Model,
    touch_times: Sequence[datetime],
    order_time: datetime,
    half_life: timedelta,
) -> list[Decimal]:
    """Un-normalised weights of `model` over touchpoints already in journey order.

    >>> from datetime import UTC
    >>> t = datetime(2026, 1, 8, tzinfo=UTC)
    >>> model_weights(Model.POSITION_BASED, [t, t, t], t, timedelta(days=7))
    [Decimal('2'), Decimal('1'), Decimal('2')]
    """
    if not touch_times:
        raise ValueError("a model needs at least one touchpoint")
    if model is Model.TIME_DECAY:
        return time_decay_weights(touch_times, order_time, half_life)
    return _COUNT_MODELS[model](len(touch_times))
