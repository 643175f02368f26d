"""`attribution restate --settings FILE`: the whole history adopts new settings, as a new version.

The history is read back from ClickHouse (streams/scenario.py) and attributed under the new
settings; its credits and orders are written to new tables, which then take the place of
`credits` and `orders` by `EXCHANGE TABLES` (the KPI views read them by name, so they switch with
the exchange). The tables they replace stay queryable as `credits_s<N>` and `orders_s<N>`, and
`settings_versions` records every version's settings and when it ruled. The `markov` and
`shapley` rows of the restated orders are split as the worker's data-driven pass would split
them (sinks/datadriven.py) and written with the others, so every model switches at once; their
converting paths go to `journey_paths` once the new version rules, and every non-converting
path is written again under the new settings.

The manifest is written first: a new version is recorded as pending, with its staging tables
named by its number and marked by a table comment, before anything moves. A restate that
stopped half way is rolled back by the next run, which can tell from the comments where each
table's data is; no table is dropped unless the manifest names it as a staging table and its
comment says it holds the pending version. Run it with the workers stopped and restart them with
the same settings: docs/scenarios.md.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import ValidationError

from attribution.datadriven_credits import JourneyPath
from attribution.rows import CreditRow, OrderRow
from schemas.catalog import CatalogError
from sinks.clickhouse import ClickHouseWriter, connect
from sinks.datadriven import DataDrivenSink
from sinks.migrations import migrate
from streams.heap import cyclic_collection_paused
from streams.scenario import first_line, load_history, report_outcome, run_history
from streams.settings import ENV_PREFIX, Settings

# What decides credits and orders; the rest of the settings (where services are, secrets) is
# not the history's business and is not recorded.
RULE_SETTINGS = (
    "lookback_days",
    "half_life_days",
    "restatement_window_days",
    "refund_window_days",
    "max_touchpoints",
    "allowed_lateness_days",
    "identity_retention_days",
    "code_policy",
    "click_policy",
    "duplicate_click_window_seconds",
    "click_burst_limit",
    "click_burst_window_seconds",
    "min_click_to_order_seconds",
    "reporting_currency",
)
# Durations a journey cannot do without; the other day settings may be 0 (no restatement, no
# lateness allowed, identities forgotten at once).
POSITIVE_DAY_SETTINGS = ("lookback_days", "half_life_days")
RESTATED_TABLES = ("credits", "orders")
ACTIVE, KEPT, PENDING, ROLLED_BACK = "active", "kept", "pending", "rolled back"


class SettingsFileError(ValueError):
    pass


class RestateError(RuntimeError):
    """A restate that cannot go on; the message is one line."""


@dataclass(frozen=True)
class SettingsFile:
    path: Path
    values: dict[str, str]
    """`ATTRIBUTION_NAME` -> value"""
    lines: dict[str, int]
    """`ATTRIBUTION_NAME` -> the line that set it"""

    def where(self, setting: str) -> str:
        """Where a setting's value comes from: the file's line, or the environment."""
        name = ENV_PREFIX + setting.upper()
        if name in self.lines:
            return f"{self.path}:{self.lines[name]}: {name}={self.values[name]!r}"
        return f"{name} (environment)"


def read_env_file(path: Path) -> SettingsFile:
    """`ATTRIBUTION_NAME=value` lines (blank lines and `#` comments skipped, one pair of
    quotes around a value removed); any other line or an unknown setting is an error."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        bad_line = data[: error.start].count(b"\n") + 1
        raise SettingsFileError(f"{path}:{bad_line}: not UTF-8 text") from None
    values, lines = {}, {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not equals:
            raise SettingsFileError(f"{path}:{number}: not NAME=value: {line!r}")
        if name not in known:
            raise SettingsFileError(f"{path}:{number}: no such setting {name!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
        lines[name] = number
    return SettingsFile(path, values, lines)


def adopted_settings(settings_file: SettingsFile) -> Settings:
    """The environment's settings with the file's on top, checked as the rules need them."""
    try:
        adopted = Settings.from_env({**os.environ, **settings_file.values})
    except ValidationError as error:
        first = error.errors()[0]
        setting = str(first["loc"][0]) if first["loc"] else ""
        raise SettingsFileError(f"{settings_file.where(setting)}: {first['msg']}") from None
    for setting in RULE_SETTINGS:
        value = getattr(adopted, setting)
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsFileError(f"{settings_file.where(setting)}: must be finite")
        if setting.endswith("_days"):
            if setting in POSITIVE_DAY_SETTINGS and not value > 0:
                raise SettingsFileError(f"{settings_file.where(setting)}: must be above 0")
            if value < 0:
                raise SettingsFileError(f"{settings_file.where(setting)}: must be 0 or more")
            try:
                timedelta(days=value)
            except OverflowError:
                raise SettingsFileError(f"{settings_file.where(setting)}: too many days") from None
    if adopted.max_touchpoints < 1:
        raise SettingsFileError(f"{settings_file.where('max_touchpoints')}: must be at least 1")
    return adopted


def _setting_text(value: Any) -> str:
    """A setting as the manifest records it: 30 and 30.0 are both "30"."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def rule_values(settings: Settings) -> dict[str, str]:
    """The settings that decide credits, by name, as the manifest records them."""
    return {name: _setting_text(getattr(settings, name)) for name in RULE_SETTINGS}


def rules_json(settings: Settings) -> str:
    return json.dumps(rule_values(settings))


def staging_table(table: str, version: int) -> str:
    return f"{table}_staging_s{version}"


def kept_table(table: str, version: int) -> str:
    return f"{table}_s{version}"


def version_comment(version: int) -> str:
    """The comment of every table written for `version`: what tells, after a stop half way,
    which name holds which version's data."""
    return f"settings version {version}"


def _utc(value: Any) -> Any:
    """ClickHouse hands DateTime64(.., 'UTC') values back without their zone; inserted back
    without one they would be read as the machine's local time."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def manifest(client: Client) -> list[dict[str, Any]]:
    result = client.query(
        "SELECT * EXCEPT written_at FROM settings_versions FINAL ORDER BY version"
    )
    return [
        {name: _utc(value) for name, value in zip(result.column_names, row, strict=True)}
        for row in result.result_rows
    ]


def _record(client: Client, versions: Sequence[Mapping[str, Any]]) -> None:
    columns = [
        "version",
        "settings",
        "ruled_from",
        "ruled_to",
        "credits_table",
        "orders_table",
        "state",
    ]
    client.insert(
        "settings_versions",
        [[version[column] for column in columns] for version in versions],
        column_names=columns,
    )


def _comments(client: Client) -> dict[str, str]:
    result = client.query(
        "SELECT name, comment FROM system.tables WHERE database = currentDatabase()"
    )
    return {str(name): str(comment) for name, comment in result.result_rows}


def _active(versions: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    return next(version for version in versions if version["state"] == ACTIVE)


def active_version(client: Client, ruling: Settings, now: datetime) -> Mapping[str, Any]:
    """The version `credits` and `orders` hold; before the first restate, the settings ruling
    until now (`ruling`) are recorded as version 1."""
    versions = manifest(client)
    if versions:
        return _active(versions)
    [[first_written]] = client.query("SELECT min(written_at) FROM credits").result_rows
    first = {
        "version": 1,
        "settings": rules_json(ruling),
        "ruled_from": _utc(first_written) if first_written.year > 1970 else now,
        "ruled_to": None,
        "credits_table": "credits",
        "orders_table": "orders",
        "state": ACTIVE,
    }
    _record(client, [first])
    return first


def settings_refusal(client: Client, settings: Settings) -> str | None:
    """Why a worker with `settings` must not write to this history (None: it may): after a
    restate, a worker whose rule settings are not the active version's would credit orders
    under other rules than every stored one; while a restate is pending, `credits` may hold
    its data, which the next restate would roll back with the worker's rows. Before the first
    finished restate nothing is compared: version 1 records the settings of whoever ran it, a
    guess at what ruled. A setting the active version did not record is not compared."""
    versions = manifest(client)
    pending = [version["version"] for version in versions if version["state"] == PENDING]
    if pending:
        return (
            f"settings version {pending[0]} is pending: a restate is running or stopped half"
            " way; let it finish, or run `attribution restate` again to roll it back"
        )
    active = next((version for version in versions if version["state"] == ACTIVE), None)
    if active is None or active["version"] == 1:
        return None
    ruling = json.loads(active["settings"])
    here = rule_values(settings)
    differing = [
        f"{name} {here[name]} here, {ruling[name]} there"
        for name in RULE_SETTINGS
        if name in ruling and here[name] != ruling[name]
    ]
    if not differing:
        return None
    return (
        f"the stored credits follow settings version {active['version']}, and these settings "
        f"differ: {'; '.join(differing)}. Start the worker with version {active['version']}'s "
        "settings (the file `attribution restate` adopted), or adopt these with "
        "`attribution restate --settings FILE`"
    )


def roll_back(client: Client) -> list[int]:
    """Undo every restate that stopped before it finished: the replaced data goes back to
    `credits` and `orders`, the pending version's tables are dropped. Return their versions."""
    versions = manifest(client)
    pending = [version for version in versions if version["state"] == PENDING]
    for version in pending:
        number: int = version["version"]
        marker = version_comment(number)
        replaced = _active(versions)["version"]
        for table in RESTATED_TABLES:
            staging = staging_table(table, number)
            comments = _comments(client)
            if comments.get(table) == marker:  # swapped in: exchange it back
                if staging not in comments:  # and the replaced data already renamed
                    client.command(f"RENAME TABLE {kept_table(table, replaced)} TO {staging}")
                client.command(f"EXCHANGE TABLES {table} AND {staging}")
            if _comments(client).get(staging) == marker:
                client.command(f"DROP TABLE {staging}")
        _record(client, [{**version, "ruled_to": version["ruled_from"], "state": ROLLED_BACK}])
    return [version["version"] for version in pending]


def credits_written(client: Client) -> tuple[Any, int]:
    """When `credits` was last written and how many rows it has: a worker still writing
    changes it."""
    [[last, rows]] = client.query("SELECT max(written_at), count() FROM credits").result_rows
    return last, int(rows)


@dataclass
class Restatement:
    """One restate's steps, in order: `begin` (pending entry, staging tables), `fill`,
    `swap` and `keep_replaced` per table, `finish` (the manifest says it rules)."""

    client: Client
    replaced: Mapping[str, Any]
    pending: dict[str, Any]

    @property
    def version(self) -> int:
        number: int = self.pending["version"]
        return number

    @classmethod
    def begin(cls, client: Client, adopted: Settings, now: datetime) -> Restatement:
        versions = manifest(client)
        number = max(version["version"] for version in versions) + 1
        pending = {
            "version": number,
            "settings": rules_json(adopted),
            "ruled_from": now,
            "ruled_to": None,
            "credits_table": staging_table("credits", number),
            "orders_table": staging_table("orders", number),
            "state": PENDING,
        }
        _record(client, [pending])
        for table in RESTATED_TABLES:
            client.command(
                f"CREATE TABLE {staging_table(table, number)} AS {table} "
                f"COMMENT '{version_comment(number)}'"
            )
        return cls(client, _active(versions), pending)

    def fill(self, rows: Sequence[CreditRow | OrderRow]) -> None:
        writer = ClickHouseWriter(self.client)
        for start in range(0, len(rows), 50_000):
            writer.insert_now(
                {**row.to_wire(), "table": staging_table(row.table, self.version)}
                for row in rows[start : start + 50_000]
                if not (isinstance(row, CreditRow) and row.is_deleted)
            )

    def swap(self, table: str) -> None:
        self.client.command(f"EXCHANGE TABLES {table} AND {staging_table(table, self.version)}")

    def keep_replaced(self, table: str) -> None:
        self.client.command(
            f"RENAME TABLE {staging_table(table, self.version)} "
            f"TO {kept_table(table, self.replaced['version'])}"
        )

    def finish(self) -> None:
        replaced: int = self.replaced["version"]
        _record(
            self.client,
            [
                {
                    **self.replaced,
                    "ruled_to": self.pending["ruled_from"],
                    "credits_table": kept_table("credits", replaced),
                    "orders_table": kept_table("orders", replaced),
                    "state": KEPT,
                },
                {**self.pending, "credits_table": "credits", "orders_table": "orders"}
                | {"state": ACTIVE},
            ],
        )


def adopt(
    client: Client,
    adopted: Settings,
    rows: Sequence[CreditRow | OrderRow],
    now: datetime,
    written_before: tuple[Any, int],
) -> int:
    """Make `rows` the credits and orders of a new settings version; return its number.
    `written_before` is `credits_written` when the history was read: if the credits moved since,
    a worker is running and the restate is rolled back."""
    restatement = Restatement.begin(client, adopted, now)
    restatement.fill(rows)
    if credits_written(client) != written_before:
        roll_back(client)
        raise RestateError(
            "credits were written while the history was attributed: stop the workers and "
            "restate again"
        )
    for table in RESTATED_TABLES:
        restatement.swap(table)
    for table in RESTATED_TABLES:
        restatement.keep_replaced(table)
    restatement.finish()
    return restatement.version


@dataclass
class DataDrivenSplits:
    """The restated orders' `markov` and `shapley` rows, and their paths, stored after the swap
    by the data-driven sink at the watermark it split them at (None: none to store)."""

    rows: list[CreditRow]
    paths: list[JourneyPath]
    sink_at: tuple[DataDrivenSink, datetime] | None = None

    def store_paths(self) -> str:
        """Every path again, the restated orders' then the non-converting ones; what was written,
        for the restate's report ('' when none)."""
        if self.sink_at is None:
            return ""
        sink, watermark = self.sink_at
        closed = sink.restate_paths(self.paths, watermark)
        return f"; journey paths written again: {len(self.paths)} with an order, {closed} without"


def derive_data_driven_splits(
    client: Client, adopted: Settings, rows: Sequence[CreditRow | OrderRow], now: datetime
) -> DataDrivenSplits:
    """What the worker's data-driven pass would derive from the restated rows (none when the
    workers run without it): written with them, so that every model switches at once."""
    if not adopted.data_driven:
        return DataDrivenSplits([], [])
    sink = DataDrivenSink(
        ClickHouseWriter(client),
        adopted.rules,
        timedelta(days=adopted.weights_window_days),
        timedelta(days=adopted.weights_reweigh_days),
    )
    watermark = sink.watermark(now)
    if watermark is None:
        return DataDrivenSplits([], [])
    credits = [row for row in rows if isinstance(row, CreditRow)]
    try:
        derived, paths = sink.restated_splits(credits, watermark)
    except ValueError as error:
        raise RestateError(f"the data-driven splits not derived: {error}") from None
    return DataDrivenSplits(derived, paths, (sink, watermark))


def _prepare(settings: Settings, adopted: Settings) -> tuple[int, tuple[Any, int], list[int]]:
    """Migrations, an unfinished restate rolled back, the active version checked against the
    adopted settings; the active version's number and `credits_written`."""
    client = connect(settings.clickhouse)
    try:
        migrate(client)
        rolled_back = roll_back(client)
        active = active_version(client, settings, datetime.now(UTC))
        recorded = json.loads(active["settings"])["reporting_currency"]
        if recorded != adopted.reporting_currency:
            # Stored orders carry amounts locked at rates into the recorded currency, and the
            # fx_rates table and the views convert contracts into it: a history cannot change
            # currency in place.
            raise RestateError(
                f"ATTRIBUTION_REPORTING_CURRENCY {adopted.reporting_currency} is not the "
                f"stored history's {recorded}: a restate keeps the reporting currency"
            )
        return int(active["version"]), credits_written(client), rolled_back
    finally:
        client.close()


@cyclic_collection_paused()
def run_restate(settings: Settings, path: Path, processes: int) -> int:
    try:
        adopted = adopted_settings(read_env_file(path))
    except (OSError, SettingsFileError) as error:
        print(f"settings not read: {error}", file=sys.stderr)
        return 2
    if adopted.clickhouse != settings.clickhouse:
        print(
            "the settings file names another ClickHouse: restate that one from its own env",
            file=sys.stderr,
        )
        return 2
    try:
        active, written_before, rolled_back = _prepare(settings, adopted)
        for version in rolled_back:
            print(f"the unfinished restate to version {version} rolled back", file=sys.stderr)
        history, catalog, pii_key = load_history(adopted, None, None)
        outcome, invalid = run_history(
            history,
            catalog,
            adopted,
            adopted.rules,
            processes,
            keep_rows=True,
            pii_key=pii_key,
        )
        report_outcome(invalid, outcome)
        client = connect(settings.clickhouse)
        try:
            now = datetime.now(UTC)
            splits = derive_data_driven_splits(client, adopted, outcome.final_rows, now)
            version = adopt(
                client, adopted, [*outcome.final_rows, *splits.rows], now, written_before
            )
            paths_written = ""
            try:
                paths_written = splits.store_paths()
            except ClickHouseError as error:
                # The version rules already: the credits switched, only the weights' input lags.
                print(
                    f"the journeys' paths were not all written again: {first_line(error)};"
                    " until a restate with the same file writes them, the model weights read"
                    " fewer paths",
                    file=sys.stderr,
                )
        finally:
            client.close()
    except CatalogError as error:
        print(f"the stored catalog is not valid: {error}", file=sys.stderr)
        return 2
    except RestateError as error:
        print(f"not restated: {error}", file=sys.stderr)
        return 2
    except (ClickHouseError, OSError) as error:
        print(f"ClickHouse {settings.clickhouse}: {first_line(error)}", file=sys.stderr)
        return 2
    orders = sum(1 for row in outcome.final_rows if isinstance(row, OrderRow))
    print(
        f"settings version {version} rules from now: {orders} orders and their credits restated "
        f"from {len(history.lines)} events{paths_written}; version {active} stays in "
        f"credits_s{active} and orders_s{active}. Restart the workers with {path}.",
        file=sys.stderr,
    )
    return 0
