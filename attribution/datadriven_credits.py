"""Journey paths and the `markov` and `shapley` credit rows, derived from stored rows.

The data-driven models are credited on the sink side (docs/models.md, "Crediting orders live"):
an order's `linear` rows are its current touchpoints, so its path and its data-driven credit rows
are pure functions of those rows and of one version of the weights. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from attribution.datadriven import Path, markov_weights, shapley_weights, split_by_weights
from attribution.journey import FULL_CREDIT, NO_CREDIT, NOT_CONVERTED, ReportingSplit, _bare_row
from attribution.messages import OrderFacts
from attribution.models import Model
from attribution.money import integer_weights, split_revenue
from attribution.rows import CreditRow
from attribution.values import immutable

MARKOV = "markov"
SHAPLEY = "shapley"
DATA_DRIVEN_MODELS = (MARKOV, SHAPLEY)
# A credit row's version is the order's version in the high bits and the weights version in the
# low ones: a restatement of the order and a new weights version both make a newer row.
WEIGHTS_VERSION_BITS = 20
MAX_WEIGHTS_VERSION = (1 << WEIGHTS_VERSION_BITS) - 1
# The places of `credits.credit` (Decimal(38, 18)).
CREDIT_PLACES = Decimal(1).scaleb(-18)


def credit_version(order_version: int, weights_version: int) -> int:
    """The row version of a data-driven credit of this order version under these weights.

    >>> credit_version(3, 2)
    3145730
    >>> order_version_of(3145730), weights_version_of(3145730)
    (3, 2)
    """
    if not 0 <= weights_version <= MAX_WEIGHTS_VERSION:
        raise ValueError(f"weights version {weights_version} is out of range")
    return (order_version << WEIGHTS_VERSION_BITS) | weights_version


def order_version_of(version: int) -> int:
    return version >> WEIGHTS_VERSION_BITS


def weights_version_of(version: int) -> int:
    return version & MAX_WEIGHTS_VERSION


@immutable
class WeightedCreditRow(CreditRow):
    """A `markov` or `shapley` credit row, with the weights version it was split by (0: none yet,
    split as `linear`)."""

    weights_version: int = 0


@immutable
class Weights:
    """One version of the weights: per data-driven model, per influencer."""

    version: int
    by_model: Mapping[str, Mapping[str, Decimal]]


NO_WEIGHTS = Weights(0, {})


def weights_from_paths(paths: Iterable[Path]) -> dict[str, dict[str, Decimal]]:
    """Both models' weights from the same paths; a model no journey gives weights to is absent."""
    paths = tuple(paths)
    computed = {MARKOV: markov_weights(paths), SHAPLEY: shapley_weights(paths)}
    return {model: weights for model, weights in computed.items() if weights}


def weights_moved(
    current: Weights, computed: Mapping[str, Mapping[str, Decimal]], threshold: Decimal
) -> bool:
    """Whether some weight of `computed` differs from `current`'s by more than `threshold` (a
    weight one of them lacks counts as 0).

    >>> old = Weights(1, {MARKOV: {"anna": Decimal("0.5")}})
    >>> WEIGHT_STEP = Decimal("0.001")
    >>> weights_moved(old, {MARKOV: {"anna": Decimal("0.5009")}}, WEIGHT_STEP)
    False
    >>> weights_moved(old, {MARKOV: {"anna": Decimal("0.5"), "ben": Decimal("0.002")}}, WEIGHT_STEP)
    True
    """
    for model in DATA_DRIVEN_MODELS:
        before = current.by_model.get(model, {})
        after = computed.get(model, {})
        for influencer_id in before.keys() | after.keys():
            change = after.get(influencer_id, Decimal(0)) - before.get(influencer_id, Decimal(0))
            if abs(change) > threshold:
                return True
    return False


def data_driven_rows(
    linear_rows: Sequence[CreditRow],
    weights: Weights,
    credited_before: Mapping[str, Collection[str]],
) -> list[WeightedCreditRow]:
    """The order's `markov` and `shapley` rows from its current `linear` rows (every touchpoint,
    in position order), split by `weights`, and retractions of the touchpoints each model
    credited before (`credited_before[model]`: touchpoint event ids) that it credits no more.

    Revenue is split to the minor unit and sums to the order's net revenue (the sum of its linear
    revenue credits); so does the reporting revenue. The rows' version is
    `credit_version(order version, weights.version)`.
    """
    if not linear_rows:
        raise ValueError("an order has at least one linear row")
    first = linear_rows[0]
    order_version = first.version
    if any(row.version != order_version or row.model != Model.LINEAR for row in linear_rows):
        raise ValueError(f"order {first.order_id}: linear rows of one version expected")
    version = credit_version(order_version, weights.version)
    net_revenue = sum((row.revenue_credit for row in linear_rows), Decimal(0))
    reporting = ReportingSplit(
        first.reporting_currency,
        first.fx_rate,
        first.fx_rate_date,
        sum((row.reporting_revenue_credit for row in linear_rows), Decimal(0)),
    )
    rows: list[WeightedCreditRow] = []
    for model in DATA_DRIVEN_MODELS:
        current = _model_rows(linear_rows, model, weights, version, net_revenue, reporting)
        live = {row.touchpoint_event_id for row in current}
        retracted = sorted(set(credited_before.get(model, ())) - live)
        rows.extend(current)
        rows.extend(
            _retraction(first, model, event_id, version, weights.version) for event_id in retracted
        )
    return rows


def _model_rows(
    linear_rows: Sequence[CreditRow],
    model: str,
    weights: Weights,
    version: int,
    net_revenue: Decimal,
    reporting: ReportingSplit,
) -> list[WeightedCreditRow]:
    first = linear_rows[0]
    if len(linear_rows) == 1 and not first.influencer_id:
        # No influencer touchpoint: the order is credited whole to nobody, as in every model.
        credits: Sequence[Decimal] = (FULL_CREDIT,)
        revenues = [net_revenue]
        reporting_revenues = [reporting.net_revenue]
    else:
        credits = split_by_weights(
            [row.influencer_id for row in linear_rows], weights.by_model.get(model, {})
        )
        revenues = split_revenue(net_revenue, credits, first.currency)
        reporting_revenues = reporting.split(integer_weights(credits), revenues, first.currency)
    return [
        _weighted(
            row,
            weights.version,
            model=model,
            credit=credit,
            revenue_credit=revenue,
            reporting_revenue_credit=reporting_revenue,
            version=version,
        )
        for row, credit, revenue, reporting_revenue in zip(
            linear_rows, credits, revenues, reporting_revenues, strict=True
        )
        if credit != 0
    ]


_CREDIT_ROW_FIELDS = tuple(field.name for field in fields(CreditRow))


def _weighted(row: CreditRow, weights_version: int, **changes: Any) -> WeightedCreditRow:
    values = {name: getattr(row, name) for name in _CREDIT_ROW_FIELDS}
    values.update(changes)
    return WeightedCreditRow(**values, weights_version=weights_version)


def _retraction(
    order_row: CreditRow, model: str, touchpoint_event_id: str, version: int, weights_version: int
) -> WeightedCreditRow:
    """Deletes the model's row of a touchpoint, like the stage's retractions (only the key and
    the order's own columns are kept; the order's event and total are in no retraction)."""
    order = OrderFacts(
        "",
        order_row.order_id,
        order_row.customer_id,
        order_row.order_at,
        order_row.currency,
        Decimal(0),
    )
    retraction = _bare_row(
        order,
        model,
        touchpoint_event_id,
        NO_CREDIT,
        Decimal(0),
        version,
        deleted=True,
        policy="",
        reporting=NOT_CONVERTED,
    )
    return _weighted(retraction, weights_version)


def same_credits(stored: Iterable[CreditRow], derived: Iterable[CreditRow]) -> bool:
    """Whether the live rows `derived` would credit what the live rows `stored` credit: the same
    touchpoints, influencers, credits (to the 18 places stored) and amounts. A new weights version
    that leaves an order's split so is not written for it."""

    def credited(rows: Iterable[CreditRow]) -> set[tuple[Any, ...]]:
        return {
            (
                row.model,
                row.touchpoint_event_id,
                row.influencer_id,
                row.credit.quantize(CREDIT_PLACES),
                row.revenue_credit,
                row.reporting_revenue_credit,
            )
            for row in rows
            if not row.is_deleted
        }

    return credited(stored) == credited(derived)


# --- journey paths --------------------------------------------------------------------------


@immutable
class JourneyPath:
    """What the data-driven models read of one journey, as stored in `journey_paths`.

    A converting path is an order's touchpoints (its `version` is the order's, so a restated
    order's path replaces the older one); a non-converting path is written once (version 0).
    """

    path_id: str
    identity: str
    converted: bool
    order_id: str
    influencers: tuple[str, ...]
    campaigns: tuple[str, ...]
    platforms: tuple[str, ...]
    touched_at: tuple[datetime, ...]
    ended_at: datetime
    version: int


def path_id(*parts: str) -> str:
    """A deterministic id: the same journey gets the same id on every run and every sink."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def converting_path(linear_rows: Sequence[CreditRow]) -> JourneyPath:
    """The path of an order from its current `linear` rows in position order; an order without
    an influencer touchpoint is a path without influencer."""
    first = linear_rows[0]
    touchpoints = [row for row in linear_rows if row.influencer_id]
    return JourneyPath(
        path_id("order", first.order_id),
        first.customer_id,
        True,
        first.order_id,
        tuple(row.influencer_id for row in touchpoints),
        tuple(row.campaign_id for row in touchpoints),
        tuple(row.platform for row in touchpoints),
        tuple(row.touchpoint_at or first.order_at for row in touchpoints),
        first.order_at,
        first.version,
    )


@immutable
class UncreditedClick:
    """An influencer click that is a touchpoint of no order, with the identity it belongs to
    (the customer its visitor is linked to, else the visitor)."""

    event_id: str
    identity: str
    occurred_at: datetime
    influencer_id: str
    campaign_id: str
    platform: str


def closed_paths(
    clicks: Iterable[UncreditedClick],
    lookback: timedelta,
    after: datetime,
    until: datetime,
    max_touchpoints: int,
) -> list[JourneyPath]:
    """The non-converting paths that end in (`after`, `until`].

    A journey without an order ends at a click no other click of its identity follows within the
    lookback; its path holds the identity's clicks within the lookback up to that click (the
    touchpoints an order right after it would have had), at most the `max_touchpoints` last.
    `clicks` must hold every click of these identities from `after - lookback` to
    `until + lookback`, so that a path's start and whether a later click continues it are known.
    Its id is made of its last click's event id alone (a click is in one identity's journeys):
    the same on every run however the ranges fall, and nothing personal, so an erasure that
    renames the identity leaves no way back to it.
    """
    by_identity: dict[str, list[UncreditedClick]] = {}
    for click in clicks:
        by_identity.setdefault(click.identity, []).append(click)
    paths = []
    for identity, own in sorted(by_identity.items()):
        own.sort(key=lambda click: (click.occurred_at, click.event_id))
        for index, last in enumerate(own):
            if not after < last.occurred_at <= until:
                continue
            following = own[index + 1] if index + 1 < len(own) else None
            if following is not None and following.occurred_at - last.occurred_at <= lookback:
                continue
            path = [
                click
                for click in own[: index + 1]
                if last.occurred_at - click.occurred_at <= lookback
            ][-max_touchpoints:]
            paths.append(
                JourneyPath(
                    path_id("journey", last.event_id),
                    identity,
                    False,
                    "",
                    tuple(click.influencer_id for click in path),
                    tuple(click.campaign_id for click in path),
                    tuple(click.platform for click in path),
                    tuple(click.occurred_at for click in path),
                    last.occurred_at,
                    0,
                )
            )
    return paths
