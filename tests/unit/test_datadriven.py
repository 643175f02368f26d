"""Data-driven weights: hand-computed paths, DP6's marketing-attribution-models, invariants.

The reference is `marketing-attribution-models` 2.1.1 (module `mam`). Its Markov model uses
the same conventions as ours: start, conversion and "(null)" states, self-transitions dropped
(`transition_to_same_state=False`), removal effect 1 - P(conversion without k) / P(conversion),
normalised by their sum; it solves one absorbing chain per removed influencer, where we read
every removal effect off one inverse.

Its `run_shapley` scores each converting set S with a game over S's own subsets worth their
exact-set conversions (and caps a set at its alphabetically last `max_size` channels), which is
not Zhao et al.'s game, where a set is worth the conversions of every journey whose set lies
within it. The two agree only when no converting set contains another. So the like-for-like
check feeds the reference's Shapley engine (`ShapleyModel._calculate_shapley_for_journey`,
the full definition over all 2^n coalitions) with Zhao's worth function of our capped sets.
"""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal
from fractions import Fraction

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mam import MAM
from mam.models.shapley import ShapleyModel

from attribution.datadriven import (
    Path,
    markov_removal_effects,
    markov_weights,
    shapley_values,
    shapley_weights,
    split_by_weights,
)

TOLERANCE = 1e-9

# The worked example of docs/models.md.
EXAMPLE = [
    Path(("anna", "ben"), converted=True, count=2),
    Path(("anna", "anna"), converted=False),
    Path(("cleo", "ben"), converted=True),
    Path(("cleo",), converted=False),
    Path(("ben",), converted=False),
]


def test_markov_removal_effects_of_the_worked_example() -> None:
    """Transitions (journeys): start->anna 3, start->cleo 2, start->ben 1; anna->ben 2,
    anna->null 1 (anna > anna is one touch); cleo->ben 1, cleo->null 1; ben->conversion 3,
    ben->null 1.

    P(conversion) from ben 3/4, anna 2/3 x 3/4 = 1/2, cleo 1/2 x 3/4 = 3/8,
    start 3/6 x 1/2 + 2/6 x 3/8 + 1/6 x 3/4 = 1/4 + 1/8 + 1/8 = 1/2.
    Without anna: start 1/8 + 1/8 = 1/4, effect 1 - (1/4)/(1/2) = 1/2.
    Without ben: nothing converts, effect 1.
    Without cleo: start 1/4 + 1/8 = 3/8, effect 1 - (3/8)/(1/2) = 1/4.
    Weights: effects / (7/4) = 2/7, 4/7, 1/7.
    """
    effects = markov_removal_effects(EXAMPLE)
    assert effects == pytest.approx({"anna": 0.5, "ben": 1.0, "cleo": 0.25}, abs=1e-12)
    assert markov_weights(EXAMPLE) == {
        "anna": Decimal("0.285714285714"),
        "ben": Decimal("0.571428571429"),
        "cleo": Decimal("0.142857142857"),
    }


def test_markov_solves_a_path_that_loops_back() -> None:
    """a > b > a converts; b and a > b do not.

    Transitions: start->a 2, start->b 1; a->b 2, a->conversion 1; b->a 1, b->null 2.
    h(a) = 2/3 h(b) + 1/3 and h(b) = 1/3 h(a), so 7/9 h(a) = 1/3: h(a) = 3/7, h(b) = 1/7;
    h(start) = 2/3 x 3/7 + 1/3 x 1/7 = 1/3.
    Without a: nothing converts, effect 1. Without b: h(a) = 1/3, h(start) = 2/3 x 1/3 = 2/9,
    effect 1 - (2/9)/(1/3) = 1/3. Weights: 1 / (4/3) = 3/4 and 1/4.
    """
    paths = [Path(("a", "b", "a"), True), Path(("b",), False), Path(("a", "b"), False)]
    assert markov_removal_effects(paths) == pytest.approx({"a": 1.0, "b": 1 / 3}, abs=1e-12)
    assert markov_weights(paths) == {"a": Decimal("0.75"), "b": Decimal("0.25")}


def test_markov_counts_repeated_touches_once_wherever_they_are() -> None:
    """a > a > b and a > b give the same chain; so does a > b > b > b."""
    once = [Path(("a", "b"), True, 3), Path(("b",), False, 2), Path(("a",), False)]
    repeated = [Path(("a", "a", "b"), True), Path(("a", "b", "b", "b"), True, 2), *once[1:]]
    assert markov_removal_effects(repeated) == markov_removal_effects(once)


def test_paths_without_an_influencer_change_no_markov_weight() -> None:
    """The worked example plus 4 journeys straight from start to conversion and 5 to null.

    Start now has 15 journeys, 6 of them to influencers as before, so the influencers' part of
    every conversion probability from start is 6/15 of what it was (1/2, or 1/4, 1/8, 3/8
    without anna, ben, cleo), and the direct part is 4/15:
    h(start) = 6/15 x 1/2 + 4/15 = 7/15; without anna 6/15 x 1/4 + 4/15 = 11/30, effect
    1 - 11/14 = 3/14; without ben 4/15, effect 1 - 4/7 = 3/7; without cleo 6/15 x 3/8 + 4/15 =
    5/12, effect 1 - 25/28 = 3/28. Every effect is 3/7 of the example's: the weights stay.
    """
    with_direct = [*EXAMPLE, Path((), True, 4), Path((), False, 5)]
    assert markov_removal_effects(with_direct) == pytest.approx(
        {"anna": 3 / 14, "ben": 3 / 7, "cleo": 3 / 28}, abs=1e-12
    )
    assert markov_weights(with_direct) == markov_weights(EXAMPLE)


def test_no_conversion_no_weight() -> None:
    paths = [Path(("a", "b"), False), Path((), True)]
    assert markov_removal_effects(paths) == {"a": 0.0, "b": 0.0}
    assert markov_weights(paths) == {}
    assert shapley_values(paths) == {"a": Fraction(0), "b": Fraction(0)}
    assert shapley_weights(paths) == {}


def test_shapley_values_of_the_worked_example() -> None:
    """Converting sets: {anna, ben} 2 journeys, {ben, cleo} 1 (non-converting paths add nothing).
    Each conversion goes in equal shares to its set: anna 2 x 1/2 = 1, ben 2 x 1/2 + 1/2 = 3/2,
    cleo 1/2. Weights: / 3 = 1/3, 1/2, 1/6."""
    assert shapley_values(EXAMPLE) == {
        "anna": Fraction(1),
        "ben": Fraction(3, 2),
        "cleo": Fraction(1, 2),
    }
    assert shapley_weights(EXAMPLE) == {
        "anna": Decimal("0.333333333333333333"),
        "ben": Decimal("0.5"),
        "cleo": Decimal("0.166666666666666667"),
    }


def test_shapley_pools_the_influencers_touched_earliest_beyond_the_cap() -> None:
    """With max_set_size 3, a > b > c > d > b keeps the two touched last (b, d) and pools c
    and a into one player: three players, 1/3 each, the pool's third halved over c and a.
    a also converts alone: a = 1/6 + 1 = 7/6, b = 1/3, c = 1/6, d = 1/3 (total 2)."""
    paths = [Path(("a", "b", "c", "d", "b"), True), Path(("a",), True)]
    assert shapley_values(paths, max_set_size=3) == {
        "a": Fraction(7, 6),
        "b": Fraction(1, 3),
        "c": Fraction(1, 6),
        "d": Fraction(1, 3),
    }
    assert shapley_values(paths, max_set_size=4) == shapley_values(paths)
    assert shapley_values(paths)["c"] == Fraction(1, 4)


def test_splitting_an_order_by_the_example_weights() -> None:
    """cleo > anna > ben > ben under Markov: 1/7, 2/7, and ben's 4/7 halved over two clicks.
    At 12 places: 142857142857 + 285714285714 + 2 x 285714285714.5 = 10^12 units."""
    credits = split_by_weights(["cleo", "anna", "ben", "ben"], markov_weights(EXAMPLE))
    assert credits == (
        Decimal("0.142857142857"),
        Decimal("0.285714285714"),
        Decimal("0.2857142857145"),
        Decimal("0.2857142857145"),
    )
    assert sum(credits) == 1


def test_an_order_of_unknown_or_worthless_influencers_is_split_linearly() -> None:
    weights = {"anna": Decimal("0.5"), "ben": Decimal("0.5"), "dora": Decimal(0)}
    assert split_by_weights(["dora", "eve", "eve"], weights) == (
        Decimal("0.333333333333333334"),
        Decimal("0.333333333333333333"),
        Decimal("0.333333333333333333"),
    )
    assert split_by_weights(["dora", "anna", "eve"], weights) == (
        Decimal(0),
        Decimal(1),
        Decimal(0),
    )
    with pytest.raises(ValueError):
        split_by_weights([], weights)


# Against the reference ------------------------------------------------------------------


def random_paths(seed: int, influencers: int, journeys: int, longest: int) -> list[Path]:
    rng = random.Random(seed)
    names = [f"inf{number}" for number in range(influencers)]
    taken: Counter[tuple[tuple[str, ...], bool]] = Counter()
    for _ in range(journeys):
        touches = tuple(rng.choice(names) for _ in range(rng.randint(1, longest)))
        taken[touches, rng.random() < 0.3] += 1
    return [Path(touches, converted, count) for (touches, converted), count in taken.items()]


MARKOV_CASES = [EXAMPLE, *(random_paths(seed, 6, 400, longest=7) for seed in range(3))]
# The reference enumerates every coalition, and every distinct pool is a player of its own:
# uncapped cases with 6 influencers, capped ones with 5 influencers on paths of 5 touches at most.
SHAPLEY_CASES = [
    (EXAMPLE, 5),
    *((random_paths(seed, 6, 400, longest=7), 6) for seed in range(2)),
    *((random_paths(seed, 5, 200, longest=5), 3) for seed in range(2)),
]


def reference_model(paths: list[Path]) -> MAM:
    """The paths in the reference's grouped-journey format: "a > b", converted, journeys."""
    frame = pl.DataFrame(
        {
            "path": [" > ".join(path.influencers) for path in paths],
            "converted": [path.converted for path in paths],
            "journeys": [path.count for path in paths],
        }
    )
    return MAM(
        frame,
        format_type="grouped_journey",
        channels_colname="path",
        journey_with_conv_colname="converted",
        occurrences_colname="journeys",
    )


def reference_removal_effects(paths: list[Path], *, keep_self_loops: bool) -> dict[str, float]:
    result = reference_model(paths).run_markov(transition_to_same_state=keep_self_loops)
    effects: dict[str, float] = result.metadata["removal_effect"]["removal_effect"].to_dict()
    return effects


@pytest.mark.parametrize("paths", MARKOV_CASES)
@pytest.mark.parametrize("keep_self_loops", [False, True])
def test_markov_matches_the_reference(paths: list[Path], keep_self_loops: bool) -> None:
    """Keeping self-transitions (a > a) only makes a state linger: absorption is the same."""
    expected = reference_removal_effects(paths, keep_self_loops=keep_self_loops)
    assert markov_removal_effects(paths) == pytest.approx(expected, abs=TOLERANCE)
    total = sum(expected.values())
    weights = {influencer: float(weight) for influencer, weight in markov_weights(paths).items()}
    assert weights == pytest.approx(
        {influencer: effect / total for influencer, effect in expected.items()}, abs=TOLERANCE
    )


def reference_shapley_values(paths: list[Path], max_set_size: int) -> dict[str, float]:
    """Full-definition Shapley values of Zhao's game over our capped sets, by the reference.

    Players: every influencer kept in some capped set, and one per distinct pool (a pool's
    value is then split equally over its influencers). Worth of a coalition: conversions of the
    journeys whose capped set lies within it."""
    conversions: Counter[frozenset[str]] = Counter()
    pools: dict[str, tuple[str, ...]] = {}
    for path in paths:
        if not (path.converted and path.influencers):
            continue
        last_touched_first = list(dict.fromkeys(reversed(path.influencers)))
        players = last_touched_first[: max_set_size - 1]
        pooled = last_touched_first[max_set_size - 1 :]
        if len(pooled) == 1:
            players.append(pooled[0])
        elif pooled:
            pool = "pool of " + ",".join(sorted(pooled))
            pools[pool] = tuple(pooled)
            players.append(pool)
        conversions[frozenset(players)] += path.count
    everyone = sorted(set().union(*conversions))
    worth: dict[str, float] = {}
    for mask in range(1, 1 << len(everyone)):
        coalition = [player for bit, player in enumerate(everyone) if mask >> bit & 1]
        worth[" > ".join(coalition)] = float(
            sum(count for players, count in conversions.items() if players <= set(coalition))
        )
    shares = ShapleyModel(separator=" > ")._calculate_shapley_for_journey(everyone, worth, False)
    values: dict[str, float] = {}
    for player, share in zip(everyone, shares, strict=True):
        members = pools.get(player, (player,))
        for influencer in members:
            values[influencer] = values.get(influencer, 0.0) + float(share) / len(members)
    return values


@pytest.mark.parametrize(("paths", "max_set_size"), SHAPLEY_CASES)
def test_shapley_matches_the_reference(paths: list[Path], max_set_size: int) -> None:
    expected = reference_shapley_values(paths, max_set_size)
    values = shapley_values(paths, max_set_size)
    converting = {influencer: float(value) for influencer, value in values.items() if value}
    assert converting == pytest.approx(expected, abs=TOLERANCE)
    total = sum(expected.values())
    weights = shapley_weights(paths, max_set_size)
    assert {influencer: float(weight) for influencer, weight in weights.items() if weight} == (
        pytest.approx(
            {influencer: value / total for influencer, value in expected.items()}, abs=TOLERANCE
        )
    )


def test_reference_run_shapley_agrees_when_no_converting_set_holds_another() -> None:
    """Sets {a, b} 3, {a, c} 2, {b, c} 1: a = 3/2 + 1, b = 3/2 + 1/2, c = 1 + 1/2."""
    paths = [
        Path(("a", "b"), True, 3),
        Path(("a", "a", "c"), True, 2),
        Path(("b", "c"), True),
        Path(("a",), False, 2),
    ]
    reference = reference_model(paths).run_shapley(max_size=None, value_column="conversions")
    expected = dict(zip(*reference.to_dict().values(), strict=True))
    assert expected == pytest.approx({"a": 2.5, "b": 2.0, "c": 1.5}, abs=TOLERANCE)
    assert {k: float(v) for k, v in shapley_values(paths).items()} == expected


# Invariants -----------------------------------------------------------------------------

journeys = st.lists(
    st.builds(
        Path,
        influencers=st.lists(st.sampled_from("abcdef"), max_size=7).map(tuple),
        converted=st.booleans(),
        count=st.integers(min_value=1, max_value=5),
    ),
    min_size=1,
    max_size=15,
)


@given(journeys, st.randoms(use_true_random=False))
def test_weights_are_shares_that_ignore_the_order_of_paths(
    paths: list[Path], rng: random.Random
) -> None:
    shuffled = rng.sample(paths, len(paths))
    someone_converted = any(path.converted and path.influencers for path in paths)
    for weights, again in [
        (markov_weights(paths), markov_weights(shuffled)),
        (shapley_weights(paths), shapley_weights(shuffled)),
        (shapley_weights(paths, 3), shapley_weights(shuffled, 3)),
    ]:
        assert weights == again
        assert all(weight >= 0 for weight in weights.values())
        assert sum(weights.values()) == (1 if someone_converted else 0)


@given(
    st.lists(st.sampled_from("abcde"), min_size=1, max_size=12),
    st.dictionaries(
        st.sampled_from("abcd"),
        st.decimals(min_value=0, max_value=1, places=18, allow_nan=False),
    ),
)
def test_an_order_is_split_into_credits_summing_to_one(
    influencers: list[str], weights: dict[str, Decimal]
) -> None:
    credits = split_by_weights(influencers, weights)
    assert len(credits) == len(influencers)
    assert sum(credits) == 1
    assert all(credit >= 0 for credit in credits)
    worthless = {influencer for influencer in influencers if not weights.get(influencer)}
    if worthless != set(influencers):
        assert all(
            credit == 0
            for influencer, credit in zip(influencers, credits, strict=True)
            if influencer in worthless
        )
