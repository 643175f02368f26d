"""The data-driven models on the worker that owns ClickHouse: paths, weights and credit rows.

Three passes, each safe to repeat (every row they write is deterministic and keyed for
ReplacingMergeTree), run by the timer of agents/datadriven.py:

- `credit_orders`: orders whose `linear` rows changed since the last pass, and orders split by
  older weights than the current ones (inside the reweigh window, or split as `linear` for want
  of any weights whatever their age), get their converting path and their `markov` and `shapley`
  rows, from the order's stored rows; at most ORDERS_PER_PASS orders a pass.
- `write_closed_paths`: non-converting paths whose lookback has passed at the event-time
  watermark, once a day of event time has settled, at most a week of it per pass.
- `compute_weights`: both models' weights from the paths of the trailing window; a new version
  when a weight moved by more than WEIGHT_CHANGE.

The reads and writes run on the ClickHouse writer's thread; building the paths and the weights
(the Markov inverse) runs on another thread, so the sink's inserts wait only for the I/O.

The rules and their reasons are in docs/models.md ("Crediting orders live").
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from attribution.datadriven import Path
from attribution.datadriven_credits import (
    DATA_DRIVEN_MODELS,
    NO_WEIGHTS,
    JourneyPath,
    UncreditedClick,
    Weights,
    closed_paths,
    converting_path,
    data_driven_rows,
    order_version_of,
    same_credits,
    weights_from_paths,
    weights_moved,
    weights_version_of,
)
from attribution.models import Model
from attribution.rows import CreditRow
from attribution.rules import Rules
from sinks.clickhouse import ClickHouseWriter

log = logging.getLogger(__name__)

# Orders credited by one pass, the changed ones first, then those a new weights version reweighs.
ORDERS_PER_PASS = 2_000
# A page takes about 0.1 s on the writer's thread, which the sink's inserts wait for.
ORDERS_PER_READ = 100
# Event time of clicks a path pass covers at most: a backfill of months catches up in steps.
PATH_RANGE_PER_PASS = timedelta(days=7)
# The path pass waits for this much newly settled event time: each pass reads the clicks of two
# lookbacks around its range, too much to read every tick for a few minutes of new paths.
PATH_STEP = timedelta(days=1)
# A new weights version is stored only when some weight moved by more than this: each version
# reweighs the orders of the reweigh window, which a trickle of new journeys must not do hourly.
WEIGHT_CHANGE = Decimal("0.001")
# Rows inserted by another sink into a shared server may become visible a little after rows
# written later: the pass looks this far behind where it stopped (rereading is harmless).
WRITTEN_AT_MARGIN = timedelta(seconds=10)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_CREDIT_COLUMNS = tuple(column.name for column in fields(CreditRow))
_MODELS = (Model.LINEAR.value, *DATA_DRIVEN_MODELS)

WATERMARK_SQL = """
    SELECT greatest((SELECT max(order_at) FROM orders), (SELECT max(occurred_at) FROM clicks))
"""
# Paged by (written_at, order_id): one insert of many orders shares one written_at.
CHANGED_ORDERS_SQL = """
    SELECT order_id, max(written_at) AS written FROM credits
    WHERE model = 'linear' AND written_at >= {since:DateTime64(3, 'UTC')}
    GROUP BY order_id HAVING (written, order_id) > ({since:DateTime64(3, 'UTC')}, {after:String})
    ORDER BY written, order_id LIMIT {limit:UInt32}
"""
# Where a restarted worker resumes: the earliest cursor position of the orders that were read
# and not yet credited when it last credited a page, so none of them is skipped (paths of
# orders credited with nothing waiting record 1970: a restart then reads more again).
LAST_CREDITED_SQL = "SELECT max(linear_written_at) FROM journey_paths WHERE converted"
# Orders split by older weights than `version`: those of the reweigh window, and those split as
# linear for want of weights (weights version 0) whatever their age, which are looked for over
# the whole history (`scan_from`) once per worker and then by nothing.
REWEIGH_ORDERS_SQL = """
    SELECT order_id FROM credits
    WHERE model IN {models:Array(String)} AND order_at >= {scan_from:DateTime64(6, 'UTC')}
        AND order_id > {after:String}
    GROUP BY order_id
    HAVING max(weights_version) < {version:UInt32}
        AND (max(order_at) >= {oldest:DateTime64(6, 'UTC')} OR max(weights_version) = 0)
    ORDER BY order_id LIMIT {limit:UInt32}
"""
ORDER_ROWS_SQL = f"""
    SELECT {", ".join(_CREDIT_COLUMNS)} FROM credits FINAL
    WHERE order_id IN {{orders:Array(String)}} AND model IN {{models:Array(String)}}
        AND NOT is_deleted
    ORDER BY order_id, model, position, touchpoint_event_id
"""
# The version of each order's live split (order and weights version, `credit_version`).
SPLIT_VERSIONS_SQL = """
    SELECT order_id, max(version) FROM credits FINAL
    WHERE model IN ('markov', 'shapley') AND NOT is_deleted
    GROUP BY order_id
"""
NEWEST_CREDIT_SQL = "SELECT max(written_at) FROM credits"
# A restate writes every path again (`restate_paths`).
CLEAR_PATHS_SQL = "TRUNCATE TABLE journey_paths"
CURRENT_WEIGHTS_VERSION_SQL = "SELECT max(version) FROM model_weights"
WEIGHTS_SQL = """
    SELECT model, influencer_id, weight FROM model_weights FINAL
    WHERE version = {version:UInt32} AND influencer_id != ''
"""
WINDOW_PATHS_SQL = """
    SELECT influencers, converted, count() FROM journey_paths FINAL
    WHERE ended_at > {start:DateTime64(6, 'UTC')} AND ended_at <= {end:DateTime64(6, 'UTC')}
    GROUP BY influencers, converted
"""
LAST_CLOSED_PATH_SQL = """
    SELECT max(ended_at), (SELECT min(occurred_at) FROM clicks WHERE influencer_id != '')
    FROM journey_paths WHERE NOT converted
"""
# Influencer clicks of a time range that are the touchpoint of no order and not invalid, each
# with its identity: the customer it carried, else the one its visitor was first linked to
# (contract 2.5), else its visitor ('' once erased: such clicks make no path). The links and
# classifications read are those of these clicks only.
UNCREDITED_CLICKS_SQL = """
    SELECT c.event_id,
           multiIf(c.customer_id != '', c.customer_id, l.customer_id != '', l.customer_id,
                   c.visitor_id != '', concat('visitor:', c.visitor_id), '') AS identity,
           c.occurred_at, c.influencer_id, c.campaign_id, c.platform
    FROM (
        SELECT event_id, customer_id, visitor_id, occurred_at, influencer_id, campaign_id,
               platform
        FROM clicks FINAL
        WHERE influencer_id != '' AND occurred_at >= {start:DateTime64(6, 'UTC')}
            AND occurred_at <= {end:DateTime64(6, 'UTC')}
    ) AS c
    LEFT JOIN (
        SELECT visitor_id, argMin(customer_id, occurred_at) AS customer_id
        FROM identity_links
        WHERE visitor_id IN (
            SELECT visitor_id FROM clicks
            WHERE influencer_id != '' AND visitor_id != ''
                AND occurred_at >= {start:DateTime64(6, 'UTC')}
                AND occurred_at <= {end:DateTime64(6, 'UTC')}
        )
        GROUP BY visitor_id
    ) AS l ON l.visitor_id = c.visitor_id
    LEFT JOIN (
        -- A classification has its click's time: the range of the clicks bounds it.
        SELECT event_id, status FROM click_classifications FINAL
        WHERE occurred_at >= {start:DateTime64(6, 'UTC')}
            AND occurred_at <= {end:DateTime64(6, 'UTC')}
    ) AS k ON k.event_id = c.event_id
    WHERE k.status != 'invalid' AND c.event_id NOT IN (
        SELECT touchpoint_event_id FROM credits FINAL
        WHERE model = 'linear' AND order_at >= {start:DateTime64(6, 'UTC')}
            AND order_at <= {credited_until:DateTime64(6, 'UTC')}
    )
"""
PATH_COLUMNS = tuple(column.name for column in fields(JourneyPath))
# A converting path also records where a restart may resume crediting (LAST_CREDITED_SQL).
CONVERTING_PATH_COLUMNS = (*PATH_COLUMNS, "linear_written_at")


def _utc(moment: datetime) -> datetime:
    """ClickHouse hands back naive UTC times."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


@dataclass
class DataDrivenSink:
    """The passes, with what they remember between ticks (all of it can be lost: a restarted
    worker starts again from what ClickHouse holds).

    `watermark` and `current_weights` block and are run on the writer's thread by the caller;
    `credit_orders`, `write_closed_paths` and `compute_weights` are coroutines that put their
    work on that thread themselves; the weights are computed on another (they hold no personal
    data)."""

    writer: ClickHouseWriter
    rules: Rules
    weights_window: timedelta
    # Orders this recent at the watermark take a new weights version; older ones keep theirs.
    reweigh_window: timedelta
    # (written_at, order id) of the last changed order credited; None: not read yet.
    changed_since: tuple[datetime, str] | None = None
    paths_until: datetime | None = None
    reweighed_version: int = 0
    reweigh_after: str = ""
    # Whether the orders split as linear for want of weights were all looked for (see
    # REWEIGH_ORDERS_SQL): only once per worker, as no new one appears once a version exists.
    unweighed_swept: bool = False
    # Orders read and not yet credited, in the order they are credited: a pass that gives way
    # to live traffic, or whose page fails, leaves them first for the next. Each with the
    # (written_at) position at which the changed orders' cursor read it (None: read as needing
    # the current weights); the earliest is what converting paths record as
    # `linear_written_at`. Only in memory: a restarted worker reads the changed orders again
    # from the last one it credited (LAST_CREDITED_SQL).
    waiting: dict[str, datetime | None] = field(default_factory=dict)
    _weights: dict[int, Weights] = field(default_factory=lambda: {0: NO_WEIGHTS})

    def watermark(self, now: datetime) -> datetime | None:
        """The newest event time stored, never ahead of `now` (None: nothing stored yet)."""
        _, [[newest]] = self.writer.query(WATERMARK_SQL)
        newest = _utc(newest)
        return None if newest <= EPOCH else min(newest, now)

    # --- weights ---------------------------------------------------------------------------

    def current_weights(self) -> Weights:
        _, [[version]] = self.writer.query(CURRENT_WEIGHTS_VERSION_SQL)
        return self.weights(int(version))

    def weights(self, version: int) -> Weights:
        if version not in self._weights:
            _, rows = self.writer.query(WEIGHTS_SQL, parameters={"version": version})
            by_model: dict[str, dict[str, Decimal]] = defaultdict(dict)
            for model, influencer_id, weight in rows:
                by_model[model][influencer_id] = Decimal(weight)
            self._weights[version] = Weights(version, dict(by_model))
        return self._weights[version]

    async def compute_weights(self, watermark: datetime, computed_at: datetime) -> Weights | None:
        """The weights of the paths ending in the window before `watermark`, stored as a new
        version if some weight moved by more than WEIGHT_CHANGE; the new version, else None."""
        start = watermark - self.weights_window
        paths, current = await self.writer.call(self._window_paths, start, watermark)
        computed = await asyncio.to_thread(weights_from_paths, paths)
        if not weights_moved(current, computed, WEIGHT_CHANGE):
            return None
        version = current.version + 1
        journeys = sum(path.count for path in paths)
        stored = [
            [version, model, influencer_id, weight, start, watermark, computed_at, journeys]
            for model in DATA_DRIVEN_MODELS
            # A model without weights is recorded with influencer '' so the version exists.
            for influencer_id, weight in (computed.get(model) or {"": Decimal(0)}).items()
        ]
        await self.writer.call(
            self.writer.insert_columns,
            "model_weights",
            stored,
            [
                "version",
                "model",
                "influencer_id",
                "weight",
                "window_start",
                "window_end",
                "computed_at",
                "paths",
            ],
        )
        self._weights[version] = Weights(version, computed)
        log.info("model weights version %d from %d journeys", version, journeys)
        return self._weights[version]

    def _window_paths(self, start: datetime, end: datetime) -> tuple[list[Path], Weights]:
        _, rows = self.writer.query(
            WINDOW_PATHS_SQL, parameters={"start": _naive(start), "end": _naive(end)}
        )
        paths = [
            Path(tuple(influencers), bool(converted), int(count))
            for influencers, converted, count in rows
        ]
        return paths, self.current_weights()

    # --- credit rows -----------------------------------------------------------------------

    async def credit_orders(
        self, watermark: datetime, give_way: Callable[[], bool] = lambda: False
    ) -> tuple[int, bool]:
        """Credit the orders deferred by the last pass, then those that changed or need the
        current weights, a page per call on the writer's thread so that the sink's inserts go on
        between pages; after each page but the last, stop if `give_way()`. The orders not
        credited come first in the next pass, a failed page's after the others.
        Return how many orders were credited, and whether the pass gave way."""
        current, pages = await self.writer.call(self.orders_to_credit, watermark)
        credited = 0
        for number, page in enumerate(pages):
            if number and give_way():
                return credited, True
            try:
                credited += await self.writer.call(self.credit_page, page, current, watermark)
            except Exception:
                # Retried last: a page the engine keeps refusing must not hold up the others.
                for order_id in page:
                    self.waiting[order_id] = self.waiting.pop(order_id)
                raise
            for order_id in page:
                del self.waiting[order_id]
        return credited, False

    def orders_to_credit(self, watermark: datetime) -> tuple[Weights, list[list[str]]]:
        """The current weights, and the orders deferred by the last pass, then those that
        changed or need the weights, in pages of ORDERS_PER_READ. The cursors and `waiting`
        change only once every read has succeeded."""
        current = self.current_weights()
        # No room (a pass whose first page failed) reads no new order: LIMIT 0.
        room = ORDERS_PER_PASS - len(self.waiting)
        if self.changed_since is None:
            _, [[last_credited]] = self.writer.query(LAST_CREDITED_SQL)
            last_credited = _utc(last_credited)
            resume = last_credited - WRITTEN_AT_MARGIN if last_credited > EPOCH else EPOCH
            self.changed_since = (resume, "")
        since, after = self.changed_since
        _, changed = self.writer.query(
            CHANGED_ORDERS_SQL,
            parameters={"since": _naive(since), "after": after, "limit": room},
        )
        to_reweigh = (
            self._orders_to_reweigh(current.version, watermark, room - len(changed))
            if self.reweighed_version < current.version and len(changed) < room
            else []
        )
        for order_id, written in changed:
            if self.waiting.get(order_id) is None:
                self.waiting[order_id] = _utc(written)
        for order_id in to_reweigh:
            self.waiting.setdefault(order_id, None)
        if changed and len(changed) == room:
            self.changed_since = (_utc(changed[-1][1]), changed[-1][0])
        elif changed:
            # Caught up: look a little behind next time for rows that became visible late.
            self.changed_since = (_utc(changed[-1][1]) - WRITTEN_AT_MARGIN, "")
        waiting = list(self.waiting)
        pages = [
            waiting[start : start + ORDERS_PER_READ]
            for start in range(0, len(waiting), ORDERS_PER_READ)
        ]
        return current, pages

    def _orders_to_reweigh(self, version: int, watermark: datetime, limit: int) -> list[str]:
        """The next orders (by id) split by weights older than `version` that it should split."""
        oldest = watermark - self.reweigh_window
        _, stale = self.writer.query(
            REWEIGH_ORDERS_SQL,
            parameters={
                "models": list(DATA_DRIVEN_MODELS),
                "scan_from": _naive(oldest if self.unweighed_swept else EPOCH),
                "after": self.reweigh_after,
                "oldest": _naive(oldest),
                "version": version,
                "limit": limit,
            },
        )
        order_ids = [order_id for [order_id] in stale]
        if len(order_ids) == limit:
            # Paged by id: an order whose split the new version leaves as it is keeps its rows
            # and older version, and is not read again for this version.
            self.reweigh_after = order_ids[-1]
        else:
            self.reweighed_version, self.reweigh_after = version, ""
            self.unweighed_swept = True
        return order_ids

    def credit_page(self, order_ids: Sequence[str], current: Weights, watermark: datetime) -> int:
        """Credit one page of orders from their stored rows; return how many were written."""
        _, rows = self.writer.query(
            ORDER_ROWS_SQL, parameters={"orders": list(order_ids), "models": list(_MODELS)}
        )
        by_order: dict[str, list[CreditRow]] = defaultdict(list)
        for values in rows:
            row = _credit_row(values)
            by_order[row.order_id].append(row)
        # Where a restart may resume once these paths are stored: the earliest cursor position
        # of every order read and not yet credited, this page's included. Not when an order's
        # rows last changed: an order restated while set aside, a page retried last after a
        # failure, or a stop between the two inserts below must not move a restart past any.
        resume_from = min(
            (read_at for read_at in self.waiting.values() if read_at is not None), default=EPOCH
        )
        paths: list[list[Any]] = []
        derived: list[CreditRow] = []
        for order_id in order_ids:
            order_rows = by_order.get(order_id, [])
            linear = [row for row in order_rows if row.model == Model.LINEAR]
            if not _complete(linear):
                continue  # the rest of this order version is still on its way to ClickHouse
            stored = [row for row in order_rows if row.model in DATA_DRIVEN_MODELS]
            weights = self._weights_for(linear[0], stored, current, watermark)
            if weights is None:
                continue
            credited_before = {
                model: [row.touchpoint_event_id for row in stored if row.model == model]
                for model in DATA_DRIVEN_MODELS
            }
            rows_now = data_driven_rows(linear, weights, credited_before)
            if _split_unchanged(linear[0], stored, rows_now):
                continue
            paths.append([*_path_values(converting_path(linear)), resume_from])
            derived += rows_now
        # The path first: should the worker stop in between, the order is credited again.
        self.writer.insert_columns("journey_paths", paths, list(CONVERTING_PATH_COLUMNS))
        self.writer.insert_rows_now(derived)
        return len(paths)

    def _weights_for(
        self,
        linear_row: CreditRow,
        stored: Sequence[CreditRow],
        current: Weights,
        watermark: datetime,
    ) -> Weights | None:
        """The weights to credit the order with now, or None when its rows are up to date.

        Inside the reweigh window an order takes the current weights; an older one keeps the
        version it was credited with, unless it was split as linear for want of weights (version
        0): it takes the current one, as does an order never credited."""
        if not stored:
            return current
        version = max(row.version for row in stored)
        wanted = self._wanted_weights(linear_row, version, current, watermark)
        if (
            order_version_of(version) >= linear_row.version
            and weights_version_of(version) >= wanted
        ):
            return None
        return self.weights(wanted)

    def _wanted_weights(
        self,
        linear_row: CreditRow,
        split_version: int | None,
        current: Weights,
        watermark: datetime,
    ) -> int:
        """The weights version an order split at `split_version` (None: never split) takes."""
        if split_version is None:
            return current.version
        weights_version = weights_version_of(split_version)
        in_window = linear_row.order_at >= watermark - self.reweigh_window
        return current.version if in_window or weights_version == 0 else weights_version

    def restated_splits(
        self, restated_rows: Sequence[CreditRow], watermark: datetime
    ) -> tuple[list[CreditRow], list[JourneyPath]]:
        """The `markov` and `shapley` rows of a restate's orders, split from its `linear` rows
        (`restated_rows`: the restate's final credit rows), and their converting paths: what
        this pass would write once the restated rows are stored, written by the restate so that
        these models switch with the others. Read before the restated rows replace the stored
        ones: each order takes the weights version its stored split has, or the current one
        inside the reweigh window, for want of weights before, or when never split
        (`_wanted_weights`, as `_weights_for` chooses)."""
        _, rows = self.writer.query(SPLIT_VERSIONS_SQL)
        split_versions = {order_id: int(version) for order_id, version in rows}
        current = self.current_weights()
        linear_rows: dict[str, list[CreditRow]] = defaultdict(list)
        for row in restated_rows:
            if row.model == Model.LINEAR and not row.is_deleted:
                linear_rows[row.order_id].append(row)
        derived: list[CreditRow] = []
        paths: list[JourneyPath] = []
        for order_id, linear in linear_rows.items():
            linear.sort(key=lambda row: row.position)
            if not _complete(linear):
                raise ValueError(f"order {order_id}: the restated linear rows are not one version")
            wanted = self._wanted_weights(
                linear[0], split_versions.get(order_id), current, watermark
            )
            derived += data_driven_rows(linear, self.weights(wanted), {})
            paths.append(converting_path(linear))
        return derived, paths

    def restate_paths(self, converting: Sequence[JourneyPath], watermark: datetime) -> int:
        """Every path again, once a restate's credits rule: `converting`, the restated orders'
        paths, then the non-converting ones under these rules (the lookback decides which clicks
        are an order's touchpoints and where a journey without an order ends), up to the event
        time the worker's pass would reach at `watermark`.

        The table is emptied first. A path's version is its order's, and the replaced settings
        may have restated an order more often than the restate does: beside the new path, the
        old one would win under FINAL, and a merge would drop the new one. A restarted worker
        resumes crediting after the newest credit row (LAST_CREDITED_SQL), which the restate has
        split already, and writes non-converting paths on from the last one written here.
        Returns how many non-converting paths it wrote."""
        self.writer.command(CLEAR_PATHS_SQL, {})
        _, [[newest]] = self.writer.query(NEWEST_CREDIT_SQL)
        self.writer.insert_columns(
            "journey_paths",
            [[*_path_values(path), _utc(newest)] for path in converting],
            list(CONVERTING_PATH_COLUMNS),
        )
        self.paths_until = None
        closed = 0
        while True:
            reached = self.paths_until
            closed += self._write_closed_paths(watermark)
            if self.paths_until == reached:
                return closed

    # --- non-converting paths --------------------------------------------------------------

    async def write_closed_paths(self, watermark: datetime) -> int:
        """Write the non-converting paths that ended in the next range of event time whose
        clicks can no longer become an order's touchpoints; return how many."""
        # Read, build and write in one call on the writer's thread: an erasure applied between
        # the read and the write would otherwise see its customer's paths written back after it.
        return await self.writer.call(self._write_closed_paths, watermark)

    def _write_closed_paths(self, watermark: datetime) -> int:
        settled = self._settled_clicks(watermark)
        if settled is None:
            return 0
        after, until, clicks = settled
        paths = closed_paths(clicks, self.rules.lookback, after, until, self.rules.max_touchpoints)
        self.writer.insert_columns(
            "journey_paths", [_path_values(path) for path in paths], list(PATH_COLUMNS)
        )
        self.paths_until = until
        return len(paths)

    def _settled_clicks(
        self, watermark: datetime
    ) -> tuple[datetime, datetime, list[UncreditedClick]] | None:
        """(after, until, the clicks `closed_paths` needs) of the next range, or None when less
        than PATH_STEP of event time settled since the last."""
        if self.paths_until is None:
            _, [[last_written, first_click]] = self.writer.query(LAST_CLOSED_PATH_SQL)
            last_written, first_click = _utc(last_written), _utc(first_click)
            if last_written > EPOCH:
                self.paths_until = last_written
            elif first_click > EPOCH:
                self.paths_until = first_click - timedelta(microseconds=1)
            else:
                return None
        settled = watermark - self.rules.touchpoint_retention
        after = self.paths_until
        if settled - after < PATH_STEP:
            return None
        until = min(settled, after + PATH_RANGE_PER_PASS)
        lookback = self.rules.lookback
        _, rows = self.writer.query(
            UNCREDITED_CLICKS_SQL,
            parameters={
                "start": _naive(after - lookback),
                "end": _naive(until + lookback),
                "credited_until": _naive(until + 2 * lookback),
            },
        )
        clicks = [
            UncreditedClick(event_id, identity, _utc(at), influencer_id, campaign_id, platform)
            for event_id, identity, at, influencer_id, campaign_id, platform in rows
            if identity
        ]
        return after, until, clicks


def _split_unchanged(
    linear_row: CreditRow, stored: Sequence[CreditRow], derived: Sequence[CreditRow]
) -> bool:
    """Whether a new weights version would leave the order's stored split as it is, so that it
    is not written again: same order version, split by real weights, same credits."""
    if not stored:
        return False
    version = max(row.version for row in stored)
    return (
        order_version_of(version) == linear_row.version
        and weights_version_of(version) > 0
        and same_credits(stored, derived)
    )


def _credit_row(values: Sequence[Any]) -> CreditRow:
    row = dict(zip(_CREDIT_COLUMNS, values, strict=True))
    row["order_at"] = _utc(row["order_at"])
    if row["touchpoint_at"] is not None:
        row["touchpoint_at"] = _utc(row["touchpoint_at"])
    row["is_deleted"] = bool(row["is_deleted"])
    row["touchpoint_flags"] = tuple(row["touchpoint_flags"])
    return CreditRow(**row)


def _complete(linear: Sequence[CreditRow]) -> bool:
    """Whether these are all the live linear rows of one order version: a version's rows may
    reach ClickHouse in several inserts, and half of them must not be credited."""
    if not linear:
        return False
    version = linear[0].version
    if len(linear) == 1 and not linear[0].influencer_id:
        return True
    return all(row.version == version for row in linear) and [row.position for row in linear] == [
        *range(1, linear[0].touchpoints + 1)
    ]


def _path_values(path: JourneyPath) -> list[Any]:
    return [getattr(path, name) for name in PATH_COLUMNS]
