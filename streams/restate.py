"""`attribution restate --settings FILE`: the whole history adopts new settings, as a new version.

The history is read back from ClickHouse (streams/scenario.py) and attributed under the new
settings; its credits and orders are written to new tables, which then take the place of
`credits` and `orders` by `EXCHANGE TABLES` (the KPI views read them by name, so they switch with
the exchange). The tables they replace stay queryable as `credits_s<N>` and `orders_s<N>`, and
`settings_versions` records every version's settings and when it ruled. Run it with the workers
stopped and restart them with the same settings: docs/scenarios.md.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client
from pydantic import ValidationError

from attribution.rows import CreditRow, OrderRow
from schemas.catalog import CatalogError
from sinks.clickhouse import ClickHouseWriter, connect
from sinks.migrations import migrate
from streams.scenario import load_history, report_invalid, run_history
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
RESTATED_TABLES = ("credits", "orders")


class SettingsFileError(ValueError):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    """`ATTRIBUTION_NAME=value` lines (blank lines and `#` comments skipped, one pair of
    quotes around a value removed); any other line or an unknown setting is an error."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    values = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
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
    return values


def rules_json(settings: Settings) -> str:
    """The settings that decide credits, as the manifest records them."""
    return json.dumps({name: str(getattr(settings, name)) for name in RULE_SETTINGS})


def _manifest(client: Client) -> list[dict[str, Any]]:
    result = client.query(
        "SELECT * EXCEPT written_at FROM settings_versions FINAL ORDER BY version"
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _record(client: Client, versions: Sequence[Mapping[str, Any]]) -> None:
    columns = ["version", "settings", "ruled_from", "ruled_to", "credits_table", "orders_table"]
    client.insert(
        "settings_versions",
        [[version[column] for column in columns] for version in versions],
        column_names=columns,
    )


def adopt(
    client: Client,
    ruling: Settings,
    adopted: Settings,
    rows: Sequence[CreditRow | OrderRow],
    now: datetime,
) -> int:
    """Make `rows` the credits and orders of a new settings version; return its number. The
    first restate records the settings ruling until now (`ruling`) as version 1."""
    versions = _manifest(client)
    if not versions:
        [[first_written]] = client.query("SELECT min(written_at) FROM credits").result_rows
        versions = [
            {
                "version": 1,
                "settings": rules_json(ruling),
                "ruled_from": first_written if first_written.year > 1970 else now,
                "ruled_to": None,
                "credits_table": "credits",
                "orders_table": "orders",
            }
        ]
    active = next(version for version in reversed(versions) if version["ruled_to"] is None)
    new_version: int = max(version["version"] for version in versions) + 1
    kept_as = {table: f"{table}_s{active['version']}" for table in RESTATED_TABLES}
    for table in RESTATED_TABLES:
        client.command(f"DROP TABLE IF EXISTS {table}_next")  # left by a restate that failed
        client.command(f"CREATE TABLE {table}_next AS {table}")
    writer = ClickHouseWriter(client)
    for start in range(0, len(rows), 50_000):
        writer.insert_now(
            {**row.to_wire(), "table": f"{row.table}_next"}
            for row in rows[start : start + 50_000]
            if not (isinstance(row, CreditRow) and row.is_deleted)
        )
    for table in RESTATED_TABLES:
        client.command(f"EXCHANGE TABLES {table} AND {table}_next")
    for table in RESTATED_TABLES:
        client.command(f"RENAME TABLE {table}_next TO {kept_as[table]}")
    _record(
        client,
        [
            {
                **active,
                "ruled_to": now,
                "credits_table": kept_as["credits"],
                "orders_table": kept_as["orders"],
            },
            {
                "version": new_version,
                "settings": rules_json(adopted),
                "ruled_from": now,
                "ruled_to": None,
                "credits_table": "credits",
                "orders_table": "orders",
            },
        ],
    )
    return new_version


def run_restate(settings: Settings, settings_file: Path, processes: int) -> int:
    try:
        overrides = read_env_file(settings_file)
        adopted = Settings.from_env({**os.environ, **overrides})
    except (OSError, SettingsFileError) as error:
        print(f"settings not read: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:
        print(f"settings not valid: {error}", file=sys.stderr)
        return 2
    if adopted.clickhouse != settings.clickhouse:
        print(
            "the settings file names another ClickHouse: restate that one from its own env",
            file=sys.stderr,
        )
        return 2
    try:
        history, catalog, pii_key = load_history(adopted, None, None)
    except CatalogError as error:
        print(f"the stored catalog is not valid: {error}", file=sys.stderr)
        return 2
    outcome, invalid = run_history(
        history, catalog, adopted, adopted.rules, processes, keep_rows=True, pii_key=pii_key
    )
    report_invalid(invalid, outcome.rejected_events)
    client = connect(settings.clickhouse)
    try:
        migrate(client)
        version = adopt(client, settings, adopted, outcome.final_rows, datetime.now(UTC))
    finally:
        client.close()
    orders = sum(1 for row in outcome.final_rows if isinstance(row, OrderRow))
    print(
        f"settings version {version} rules from now: {orders} orders and their credits restated "
        f"from {len(history.lines)} events; the previous version stays in credits_s{version - 1} "
        f"and orders_s{version - 1}. Restart the workers with {settings_file}.",
        file=sys.stderr,
    )
    return 0
