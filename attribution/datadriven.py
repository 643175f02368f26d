"""Data-driven weights per influencer from journey paths: Markov removal effects and Shapley values.

Both models read the same paths (the influencers of one journey in touch order, whether it
converted, how many journeys took it) and give each influencer a weight; `split_by_weights`
then splits one order across its own touchpoints in proportion to those weights. Pure: no I/O,
no clock. The rules, a worked example and the caps are in docs/models.md.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

from attribution.models import Model, count_weights
from attribution.money import integer_weights, split_credit_units

_START = 0
MARKOV_SHARE_QUANTUM = Decimal("1e-12")


@dataclass(frozen=True, slots=True)
class Path:
    """The influencers of one journey in touch order, whether it converted, and how many took it.

    >>> Path(("anna", "ben"), converted=True, count=3)
    Path(influencers=('anna', 'ben'), converted=True, count=3)
    """

    influencers: tuple[str, ...]
    converted: bool
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a path is taken by at least one journey, not {self.count}")


def markov_removal_effects(paths: Iterable[Path]) -> dict[str, float]:
    """Each influencer's removal effect in the first-order Markov chain of the paths.

    States: start, one per influencer, conversion and null (a journey that did not convert).
    Consecutive touches of the same influencer count as one. The removal effect of k is the
    share of the conversion probability from start lost when every transition into k goes to
    null instead.

    >>> paths = [Path(("a", "b"), True), Path(("a",), False), Path(("b",), True)]
    >>> effects = markov_removal_effects(paths)
    >>> {influencer: round(effect, 12) for influencer, effect in effects.items()}
    {'a': 0.5, 'b': 1.0}
    """
    influencers, transitions, conversions, nulls = _transition_counts(paths)
    if not influencers:
        return {}
    exits = transitions.sum(axis=1) + conversions + nulls
    transient = transitions / exits[:, np.newaxis]
    # N[i, j] is the expected number of visits to j from i before absorption.
    fundamental = np.linalg.inv(np.identity(len(exits)) - transient)
    conversion_probability = fundamental @ (conversions / exits)
    from_start = conversion_probability[_START]
    if from_start == 0:
        return dict.fromkeys(influencers, 0.0)
    # Without k, start converts with h(start) - f(start, k) h(k), where f(start, k) =
    # N[start, k] / N[k, k] is the probability of ever reaching k: one inverse serves every k.
    return {
        influencer: float(
            fundamental[_START, state]
            * conversion_probability[state]
            / (fundamental[state, state] * from_start)
        )
        for state, influencer in enumerate(influencers, start=_START + 1)
    }


def markov_weights(paths: Iterable[Path]) -> dict[str, Decimal]:
    """Removal effects normalised to sum exactly to 1 (18 decimal places).

    Each share of the total is first rounded to 12 places: the float solve errs by about 1e-16
    on journey chains (more only on chains that loop many times), and 12 places keep that
    noise out of the weights.

    >>> paths = [Path(("a", "b"), True), Path(("a",), False), Path(("b",), True)]
    >>> {influencer: str(weight) for influencer, weight in markov_weights(paths).items()}
    {'a': '0.333333333333000000', 'b': '0.666666666667000000'}
    """
    effects = markov_removal_effects(paths)
    total = math.fsum(effects.values())
    if total == 0:
        return {}
    return normalised_weights(
        {
            influencer: Fraction(Decimal(effect / total).quantize(MARKOV_SHARE_QUANTUM))
            for influencer, effect in effects.items()
        }
    )


def _transition_counts(
    paths: Iterable[Path],
) -> tuple[list[str], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Influencers in id order; journeys from each state to each influencer, conversion, null.

    Row and column 0 are the start state; influencer i is row and column i + 1. Rows are built
    from the influencers' sorted ids, so the order of the paths never changes the matrix.
    """
    paths = tuple(paths)
    influencers = sorted({influencer for path in paths for influencer in path.influencers})
    state_of = {influencer: state for state, influencer in enumerate(influencers, start=_START + 1)}
    size = len(influencers) + 1
    transitions = np.zeros((size, size))
    conversions = np.zeros(size)
    nulls = np.zeros(size)
    for path in paths:
        states = [_START, *(state_of[influencer] for influencer in path.influencers)]
        for origin, destination in pairwise(states):
            if origin != destination:
                transitions[origin, destination] += path.count
        (conversions if path.converted else nulls)[states[-1]] += path.count
    return influencers, transitions, conversions, nulls


def shapley_values(paths: Iterable[Path], max_set_size: int = 5) -> dict[str, Fraction]:
    """Each influencer's Shapley value, in conversions, by Zhao et al.'s simplified formula.

    The worth of a set S of influencers is the number of conversions of journeys whose own set
    of influencers lies within S. Its Shapley values are, for each converting journey, an equal
    share of the conversion to each distinct player of its set. A set of more than
    `max_set_size` influencers keeps the `max_set_size - 1` touched last as players and pools
    the others into one player, whose share is split equally among them. Influencers seen only
    on journeys that did not convert are worth 0.

    >>> paths = [Path(("a", "b"), True), Path(("a",), False), Path(("b",), True)]
    >>> {influencer: str(value) for influencer, value in shapley_values(paths).items()}
    {'a': '1/2', 'b': '3/2'}
    """
    if max_set_size < 2:
        raise ValueError(f"a set keeps at least one influencer beside the pool, not {max_set_size}")
    conversions_by_set: Counter[tuple[tuple[str, ...], tuple[str, ...]]] = Counter()
    values: dict[str, Fraction] = {}
    for path in paths:
        values.update((influencer, Fraction(0)) for influencer in path.influencers)
        if path.converted and path.influencers:
            conversions_by_set[_capped_set(path.influencers, max_set_size)] += path.count
    for (kept, pooled), conversions in conversions_by_set.items():
        share = Fraction(conversions, len(kept) + (1 if pooled else 0))
        for influencer in kept:
            values[influencer] += share
        for influencer in pooled:
            values[influencer] += share / len(pooled)
    return dict(sorted(values.items()))


def shapley_weights(paths: Iterable[Path], max_set_size: int = 5) -> dict[str, Decimal]:
    """Shapley values normalised to sum exactly to 1 (18 decimal places).

    >>> paths = [Path(("a", "b"), True), Path(("a",), False), Path(("b",), True)]
    >>> {influencer: str(weight) for influencer, weight in shapley_weights(paths).items()}
    {'a': '0.250000000000000000', 'b': '0.750000000000000000'}
    """
    return normalised_weights(shapley_values(paths, max_set_size))


def _capped_set(
    influencers: Sequence[str], max_set_size: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The path's players in id order, and the influencers pooled into one (empty if none)."""
    last_touched_first = list(dict.fromkeys(reversed(influencers)))
    if len(last_touched_first) <= max_set_size:
        return tuple(sorted(last_touched_first)), ()
    kept = last_touched_first[: max_set_size - 1]
    pooled = last_touched_first[max_set_size - 1 :]
    return tuple(sorted(kept)), tuple(sorted(pooled))


def normalised_weights(values: Mapping[str, Fraction]) -> dict[str, Decimal]:
    """Non-negative values as weights summing exactly to 1, in influencer id order.

    The division is exact and the last of the 18 places goes by largest remainder. Empty when
    no value is positive: no influencer has earned a weight.

    >>> {k: str(v) for k, v in normalised_weights({"b": Fraction(2), "a": Fraction(1)}).items()}
    {'a': '0.333333333333333333', 'b': '0.666666666666666667'}
    """
    if not any(values.values()):
        return {}
    influencers = sorted(values)
    denominator = math.lcm(*(values[influencer].denominator for influencer in influencers))
    units = [
        values[influencer].numerator * (denominator // values[influencer].denominator)
        for influencer in influencers
    ]
    return dict(zip(influencers, split_credit_units(units), strict=True))


def split_by_weights(
    influencers: Sequence[str], weights: Mapping[str, Decimal]
) -> tuple[Decimal, ...]:
    """Credits of one order's touchpoints (given by their influencers, in journey order).

    Each distinct influencer of the order gets a share in proportion to its weight, split equally
    over its touchpoints, so touching the same influencer twice earns nothing more, as in both
    models. Influencers missing from `weights` count as weight 0. When every influencer of the
    order has weight 0, the credits are the `linear` model's. The credits sum exactly to 1
    (18 decimal places, largest remainder, earlier touchpoint first on ties).

    >>> weights = {"a": Decimal("0.6"), "b": Decimal("0.2")}
    >>> [str(credit) for credit in split_by_weights(["a", "b", "b"], weights)]
    ['0.750000000000000000', '0.125000000000000000', '0.125000000000000000']
    >>> [str(credit) for credit in split_by_weights(["c", "c"], weights)]
    ['0.500000000000000000', '0.500000000000000000']
    """
    if not influencers:
        raise ValueError("an order needs at least one touchpoint")
    touches = Counter(influencers)
    units = dict(
        zip(touches, integer_weights([weights.get(i, Decimal(0)) for i in touches]), strict=True)
    )
    if not any(units.values()):
        return tuple(split_credit_units(count_weights(Model.LINEAR, len(influencers))))
    # Scaling by a multiple of every touch count keeps each touchpoint's part an integer.
    scale = math.lcm(*touches.values())
    return tuple(
        split_credit_units(
            [units[influencer] * scale // touches[influencer] for influencer in influencers]
        )
    )
