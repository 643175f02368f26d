"""`attribution scenario`: the stored history attributed again under other settings, compared.

The history is a JSON-lines file of events (what `attribution backfill` reads) or the raw tables
of ClickHouse (`history_from_clickhouse`, what can and cannot be rebuilt: docs/scenarios.md). It
is split into parts of whole identity components (attribution.scenario.split_by_identity) that
run in separate processes; the comparison itself is pure (attribution.scenario).
"""

from __future__ import annotations

import csv
import html
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from decimal import Context, Decimal
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from attribution.fx import LockedRate
from attribution.models import ALL_MODELS, Model
from attribution.money import currency_quantum
from attribution.rules import Rules
from attribution.scenario import (
    Comparison,
    ComparisonRow,
    Contracts,
    Overrides,
    PartOutcome,
    Tally,
    attribute_part,
    compare,
    compared_models,
    split_by_identity,
)
from attribution.traffic import EMPTY_USER_AGENT, KNOWN_CRAWLER
from schemas.catalog import CatalogError, CatalogFiles, read_catalog_dir
from schemas.events import InvalidEvent, decode_event, parse_json
from sinks.catalog_store import exchange_rates, to_static_catalog
from streams.heap import cyclic_collection_paused
from streams.settings import Settings

# A click the engine classified as a crawler's comes back with a crawler's user agent: the
# stored one is only a keyed hash.
CRAWLER_USER_AGENT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
# Events of one instant in the order their stages saw them: a link before the order it came
# with, an order before its code and refunds.
_SAME_INSTANT_ORDER = {"identify": 0, "click": 1, "order": 2, "code_redemption": 3, "refund": 4}
COMPARISON_COLUMNS = (
    "level",
    "id",
    "today_revenue",
    "scenario_revenue",
    "revenue_change",
    "today_conversions",
    "scenario_conversions",
    "conversions_change",
    "today_roas",
    "scenario_roas",
    "roas_change",
    "today_payout",
    "scenario_payout",
    "payout_change",
)


@dataclass
class History:
    """Events in the order they are attributed: the JSON text of each (sent to the processes)
    and its decoded object (what the split reads)."""

    lines: list[tuple[str, bytes]] = field(default_factory=list)
    """(where the event comes from, e.g. "events.jsonl:12", its JSON)"""
    payloads: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    order_rates: dict[str, LockedRate] = field(default_factory=dict)
    """The rate each stored order was locked at, by order id: a history read back from
    ClickHouse converts at the rates the worker locked."""

    def add(self, origin: str, payload: dict[str, Any]) -> None:
        self.lines.append((origin, json.dumps(payload).encode()))
        self.payloads.append(payload)


def read_history_file(path: Path) -> History:
    """A JSON-lines file's events in file order; lines that are not JSON objects are listed in
    `invalid` (invalid events are found, and listed, when they are attributed)."""
    history = History()
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            origin = f"{path}:{number}"
            try:
                payload = parse_json(line)
            except (ValueError, RecursionError) as error:
                history.invalid.append(f"{origin}: not valid JSON: {error}")
                continue
            if not isinstance(payload, dict):
                history.invalid.append(f"{origin}: an event must be a JSON object")
                continue
            history.lines.append((origin, line))
            history.payloads.append(payload)
    return history


def _utc(value: datetime) -> datetime:
    """ClickHouse hands back DateTime64(.., 'UTC') values without their time zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _rows(client: Client, sql: str) -> Iterable[dict[str, Any]]:
    result = client.query(sql)
    for row in result.result_rows:
        yield dict(zip(result.column_names, row, strict=True))


def _amount(value: Decimal, currency: str) -> str:
    """A stored Decimal(38, 4) as the event had it: in the currency's minor unit."""
    return str(value.quantize(currency_quantum(currency)))


def _clicks(client: Client) -> Iterable[tuple[datetime, dict[str, Any]]]:
    for row in _rows(
        client,
        """
        SELECT c.event_id AS event_id, c.occurred_at AS occurred_at, c.visitor_id AS visitor_id,
               c.customer_id AS customer_id, c.influencer_id AS influencer_id,
               c.campaign_id AS campaign_id, c.platform AS platform, c.link_id AS link_id,
               c.url AS url, c.ip_hash AS ip_hash, c.user_agent_hash AS user_agent_hash,
               k.reasons AS reasons
        FROM (SELECT * FROM clicks FINAL) AS c
        LEFT JOIN (SELECT event_id, reasons FROM click_classifications FINAL) AS k
            ON k.event_id = c.event_id
        """,
    ):
        at = _utc(row["occurred_at"])
        # An erased customer's clicks lost their visitor: each stands alone.
        event: dict[str, Any] = {
            "type": "click",
            "event_id": row["event_id"],
            "occurred_at": at.isoformat(),
            "visitor_id": row["visitor_id"] or f"erased-{row['event_id']}",
            "url": row["url"],
        }
        if row["customer_id"]:
            event["customer_id"] = row["customer_id"]
        if row["influencer_id"]:
            # As resolved when the click arrived (the influencer id comes first, contract 2.1).
            event["influencer_id"] = row["influencer_id"]
            event["campaign_id"] = row["campaign_id"] or None
            event["platform"] = row["platform"] or None
            event["link_id"] = row["link_id"] or None
        if row["ip_hash"]:
            # The keyed hash stands for the address: hashed again, equal addresses stay equal.
            event["ip"] = row["ip_hash"]
        reasons = row["reasons"] or []
        if KNOWN_CRAWLER in reasons:
            event["user_agent"] = CRAWLER_USER_AGENT
        elif EMPTY_USER_AGENT in reasons:
            event["user_agent"] = ""
        elif row["user_agent_hash"]:
            event["user_agent"] = row["user_agent_hash"]
        yield at, {key: value for key, value in event.items() if value is not None}


def history_from_clickhouse(client: Client, reporting_currency: str) -> History:
    """The events the raw tables keep, by event time: clicks, identity links (those that came
    with a click are the click), orders, code redemptions and every refund decided."""
    timed: list[tuple[datetime, dict[str, Any]]] = list(_clicks(client))
    click_ids = {event["event_id"] for _, event in timed}
    for row in _rows(
        client, "SELECT event_id, occurred_at, visitor_id, customer_id FROM identity_links FINAL"
    ):
        if row["event_id"] not in click_ids:
            at = _utc(row["occurred_at"])
            timed.append((at, {"type": "identify", **row, "occurred_at": at.isoformat()}))
    history = History()
    for row in _rows(
        client,
        "SELECT order_id, customer_id, order_at, currency, total, reporting_currency, fx_rate, "
        "fx_rate_date FROM orders FINAL",
    ):
        at = _utc(row["order_at"])
        currency = row["currency"]
        if row["reporting_currency"] == reporting_currency and row["fx_rate_date"] is not None:
            history.order_rates[row["order_id"]] = LockedRate(
                reporting_currency, row["fx_rate"], row["fx_rate_date"]
            )
        order = {
            "type": "order",
            "event_id": f"order-{row['order_id']}",
            "occurred_at": at.isoformat(),
            "order_id": row["order_id"],
            "customer_id": row["customer_id"],
            "currency": currency,
            "total": _amount(row["total"], currency),
        }
        timed.append((at, order))
    for row in _rows(
        client,
        "SELECT event_id, occurred_at, code, order_id, customer_id FROM code_redemptions FINAL",
    ):
        at = _utc(row["occurred_at"])
        redemption = {"type": "code_redemption", **row, "occurred_at": at.isoformat()}
        if not row["customer_id"]:
            del redemption["customer_id"]
        timed.append((at, redemption))
    for row in _rows(
        client,
        "SELECT event_id, order_id, refunded_at, amount, currency, reason "
        "FROM refund_decisions FINAL",
    ):
        at = _utc(row.pop("refunded_at"))
        refund = {
            "type": "refund",
            **row,
            "occurred_at": at.isoformat(),
            "amount": _amount(row["amount"], row["currency"]),
            "reason": row["reason"] or None,
        }
        timed.append((at, {key: value for key, value in refund.items() if value is not None}))
    timed.sort(
        key=lambda item: (item[0], _SAME_INSTANT_ORDER[item[1]["type"]], item[1]["event_id"])
    )
    for at, event in timed:
        history.add(f"clickhouse:{event['type']}:{event['event_id']}@{at.isoformat()}", event)
    return history


def stored_fx_rates(client: Client, reporting_currency: str) -> dict[date, dict[str, Decimal]]:
    """The `fx_rates` table (rates into the reporting currency) as units per euro, the form of
    a catalog's rates: X per euro is (reporting per euro) / (reporting per X). The division is
    carried to 48 digits, so the catalog's cross rate, rounded to 20 decimals, is the stored one.
    Rates stored for another reporting currency are not the history's and are left out."""
    into: dict[date, dict[str, Decimal]] = defaultdict(dict)
    for row in _rows(
        client,
        "SELECT currency, published_on, rate FROM fx_rates FINAL "
        f"WHERE reporting_currency = '{reporting_currency}'",
    ):
        into[row["published_on"]][row["currency"]] = row["rate"]
    exact = Context(prec=48)
    per_euro = {}
    for day, rates in into.items():
        euro = rates.get("EUR")
        if euro is None or euro == 0:
            continue  # without the euro's rate the day cannot be put per euro
        per_euro[day] = {
            currency: exact.divide(euro, rate)
            for currency, rate in rates.items()
            if currency != "EUR" and rate != 0
        } | {reporting_currency: euro}
    return per_euro


def catalog_from_clickhouse(client: Client, reporting_currency: str) -> CatalogFiles:
    """The newest catalog version the worker stored (the `catalog_*` views), with the exchange
    rates of `fx_rates` (`stored_fx_rates`)."""
    columns = {
        "influencers": "influencer_id, handle, platform, followers",
        "campaigns": "campaign_id, name, category, starts_at, ends_at, budget, currency, "
        "code_policy",
        "codes": "code, influencer_id, campaign_id, credit_policy",
        "links": "link_id, influencer_id, campaign_id",
        "contracts": "influencer_id, campaign_id, fee_per_post, posts, retainer, "
        "commission_rate, bonus_amount, bonus_metric, bonus_threshold, commission_model",
    }
    files: dict[str, list[dict[str, Any]]] = {}
    for name, selected in columns.items():
        files[name] = [
            {
                key: _utc(value) if isinstance(value, datetime) else value
                for key, value in row.items()
            }
            for row in _rows(client, f"SELECT {selected} FROM catalog_{name}")
        ]
    return CatalogFiles.model_validate(
        {**files, "fx_rates": stored_fx_rates(client, reporting_currency)}
    )


@dataclass(frozen=True)
class PartTask:
    """What a process needs to attribute one part (pickled to it)."""

    lines: list[tuple[str, bytes]]
    catalog: CatalogFiles
    reporting_currency: str
    order_rates: dict[str, LockedRate]
    today: Rules
    scenario: Rules
    pii_key: bytes
    keep_rows: bool
    models: frozenset[Model]


@cyclic_collection_paused()
def attribute_task(task: PartTask) -> tuple[PartOutcome, list[str]]:
    """A part decoded and attributed; its invalid events as (origin: error) lines. The entry
    point of a part's process, so paused as a batch command's."""
    catalog = to_static_catalog(task.catalog, task.reporting_currency)
    invalid = []
    events = []
    for origin, line in task.lines:
        try:
            events.append(decode_event(line))
        except InvalidEvent as error:
            invalid.append(f"{origin}: invalid event: {error}")
    outcome = attribute_part(
        events,
        catalog,
        task.today,
        task.scenario,
        task.pii_key,
        keep_rows=task.keep_rows,
        order_rates=task.order_rates,
        models=task.models,
    )
    return outcome, invalid


def default_processes() -> int:
    return os.cpu_count() or 1


def run_history(
    history: History,
    catalog: CatalogFiles,
    settings: Settings,
    scenario: Rules,
    processes: int,
    *,
    keep_rows: bool = False,
    pii_key: bytes | None = None,
    models: Iterable[Model] = ALL_MODELS,
) -> tuple[PartOutcome, list[str]]:
    """The history under today's rules and `scenario`, split over `processes` processes, the
    tallies holding the credits of `models`."""
    key = settings.pii_key if pii_key is None else pii_key
    today = settings.rules
    reach = max(today.traffic_reach, scenario.traffic_reach) if key else None
    parts = (
        split_by_identity(history.payloads, processes, reach)
        if processes > 1
        else [list(range(len(history.lines)))]
    )
    tasks = [
        PartTask(
            [history.lines[index] for index in part],
            catalog,
            settings.reporting_currency,
            history.order_rates,
            today,
            scenario,
            key,
            keep_rows,
            frozenset(models),
        )
        for part in parts
    ]
    if len(tasks) <= 1:
        results = [attribute_task(task) for task in tasks]
    else:
        # Spawned, not forked: the parent may hold the embedded engine's threads.
        with ProcessPoolExecutor(len(tasks), mp_context=get_context("spawn")) as pool:
            results = list(pool.map(attribute_task, tasks))
    merged = PartOutcome(Tally(), Tally())
    invalid = list(history.invalid)
    for outcome, part_invalid in results:
        merged.today.merge(outcome.today)
        merged.scenario.merge(outcome.scenario)
        merged.rejected_events += outcome.rejected_events
        merged.late_events.update(outcome.late_events)
        merged.final_rows += outcome.final_rows
        invalid += part_invalid
    return merged, invalid


def contracts_of(files: CatalogFiles, reporting_currency: str) -> Contracts:
    """The catalog's contracts, each campaign's money converted at the rate of its start."""
    rates = exchange_rates(files, reporting_currency)
    campaign_rates = {}
    for campaign in files.campaigns:
        locked = rates.lock(campaign.currency, campaign.starts_at.astimezone(UTC).date())
        if locked is not None:
            campaign_rates[campaign.campaign_id] = locked
    return Contracts(
        files.contracts,
        {campaign.campaign_id: campaign for campaign in files.campaigns},
        campaign_rates,
        reporting_currency,
    )


def _text(value: Decimal | None) -> str:
    return "" if value is None else str(value)


def comparison_records(comparison: Comparison) -> Iterable[list[str]]:
    for row in comparison.rows:
        yield [
            row.level,
            row.id,
            str(row.today.revenue),
            str(row.scenario.revenue),
            _text(row.change("revenue")),
            str(row.today.conversions),
            str(row.scenario.conversions),
            _text(row.change("conversions")),
            _text(row.today.roas),
            _text(row.scenario.roas),
            _text(row.change("roas")),
            str(row.today.payout),
            str(row.scenario.payout),
            _text(row.change("payout")),
        ]


def write_comparison_csv(comparison: Comparison, out: Path) -> None:
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COMPARISON_COLUMNS)
        writer.writerows(comparison_records(comparison))


def _label(row: ComparisonRow) -> str:
    return row.id or "(unattributed)"


def print_comparison(comparison: Comparison, scenario_label: str) -> None:
    print(
        f"credited revenue ({comparison.currency}), conversions, ROAS and payout under "
        f"{comparison.model}: today, {scenario_label} and the difference"
    )
    metrics = ("revenue", "conversions", "roas", "payout")
    for level in ("influencer", "campaign"):
        rows = [row for row in comparison.rows if row.level == level]
        if not rows:
            continue
        print(f"\n{level:<18}" + "".join(f"{metric:>39}" for metric in metrics))
        print(f"{'':<18}" + f"{'today':>13}{'scenario':>13}{'change':>13}" * len(metrics))
        for row in rows:
            cells = []
            for name in metrics:
                change = row.change(name)  # type: ignore[arg-type]
                cells += [
                    _text(getattr(row.today, name)) or "-",
                    _text(getattr(row.scenario, name)) or "-",
                    f"{change:+}" if change is not None else "-",
                ]
            print(f"{_label(row)[:18]:<18}" + "".join(f"{cell:>13}" for cell in cells))


def write_chart(comparison: Comparison, out: Path, scenario_label: str) -> None:
    """A self-contained HTML page: one pair of bars (today, scenario) of credited revenue per
    influencer, inline SVG, no script."""
    rows = [row for row in comparison.rows if row.level == "influencer"]
    largest = max(
        [abs(row.today.revenue) for row in rows] + [abs(row.scenario.revenue) for row in rows],
        default=Decimal(0),
    )
    label_width, bar_width, row_height = 170, 520, 34
    height = 40 + row_height * len(rows)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + bar_width + 160}" '
        f'height="{height}" font-family="sans-serif" font-size="12">',
        '<rect x="10" y="8" width="12" height="12" fill="#8c8c8c"/>'
        '<text x="28" y="18">today</text>',
        f'<rect x="90" y="8" width="12" height="12" fill="#2f6fb3"/>'
        f'<text x="108" y="18">{html.escape(scenario_label)}</text>',
    ]
    for number, row in enumerate(rows):
        top = 32 + number * row_height
        parts.append(
            f'<text x="{label_width - 8}" y="{top + 17}" text-anchor="end">'
            f"{html.escape(_label(row))}</text>"
        )
        for offset, (figure, colour) in enumerate(
            ((row.today.revenue, "#8c8c8c"), (row.scenario.revenue, "#2f6fb3"))
        ):
            width = 0 if largest == 0 else float(abs(figure) / largest) * bar_width
            y = top + offset * 14
            parts.append(
                f'<rect x="{label_width}" y="{y}" width="{width:.1f}" height="12" '
                f'fill="{colour}"><title>{html.escape(str(figure))}</title></rect>'
                f'<text x="{label_width + width + 4:.1f}" y="{y + 10}">{figure}</text>'
            )
    parts.append("</svg>")
    title = f"Credited revenue ({comparison.currency}, {comparison.model}) per influencer"
    out.write_text(
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
        + "\n".join(parts)
        + "\n</body></html>\n",
        encoding="utf-8",
    )


def describe(overrides: Overrides) -> str:
    """The scenario's changes as the options that make them."""
    changes = [
        f"{option.name.replace('_days', '').replace('_', '-')} {value}"
        for option in fields(overrides)
        if (value := getattr(overrides, option.name)) is not None
    ]
    return "scenario (" + ", ".join(changes) + ")" if changes else "scenario (no change)"


def load_history(
    settings: Settings, history_file: Path | None, catalog_dir: Path | None
) -> tuple[History, CatalogFiles, bytes | None]:
    """The history and its catalog: from the file and `--catalog`, or read back from ClickHouse
    (whose click hashes stand for the addresses whatever the key: any non-empty key compares
    them again)."""
    if history_file is not None:
        catalog = CatalogFiles() if catalog_dir is None else read_catalog_dir(catalog_dir)
        return read_history_file(history_file), catalog, None
    from sinks.clickhouse import connect
    from sinks.migrations import migrate

    client = connect(settings.clickhouse)
    try:
        migrate(client)
        history = history_from_clickhouse(client, settings.reporting_currency)
        catalog = (
            catalog_from_clickhouse(client, settings.reporting_currency)
            if catalog_dir is None
            else read_catalog_dir(catalog_dir)
        )
    finally:
        client.close()
    return history, catalog, b"replayed-hashes"


def unwritable(path: Path) -> str | None:
    """Why `path` cannot be written, checked before a run that may take long; None when it
    can (it is not created)."""
    if path.is_dir():
        return "is a directory"
    if path.exists():
        return None if os.access(path, os.W_OK) else "not writable"
    directory = path.parent
    if not directory.is_dir():
        return f"no directory {directory}"
    return None if os.access(directory, os.W_OK) else f"directory {directory} not writable"


def first_line(error: Exception) -> str:
    """An error's message cut to its first line (ClickHouse's carry the server's stack)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def report_outcome(invalid: Sequence[str], outcome: PartOutcome) -> None:
    """Invalid events, rejections and events later than the allowed lateness, on stderr."""
    for line in invalid:
        print(line, file=sys.stderr)
    if invalid or outcome.rejected_events:
        print(
            f"{len(invalid)} invalid events left out, {outcome.rejected_events} events "
            "rejected by the stages",
            file=sys.stderr,
        )
    if outcome.late_events:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(outcome.late_events.items()))
        print(
            f"events older than the allowed lateness behind the newest before them: {kinds}",
            file=sys.stderr,
        )


@cyclic_collection_paused()
def run_scenario(
    settings: Settings,
    overrides: Overrides,
    model: str,
    history_file: Path | None,
    catalog_dir: Path | None,
    out: Path | None,
    chart: Path | None,
    processes: int,
) -> int:
    for option, path in (("--out", out), ("--chart", chart)):
        if path is not None and (problem := unwritable(path)):
            print(f"{option} {path}: {problem}", file=sys.stderr)
            return 2
    try:
        history, catalog, pii_key = load_history(settings, history_file, catalog_dir)
    except (OSError, CatalogError) as error:
        print(f"history not read: {error}", file=sys.stderr)
        return 2
    except ClickHouseError as error:
        print(f"ClickHouse {settings.clickhouse}: {first_line(error)}", file=sys.stderr)
        return 2
    scenario_rules = overrides.applied_to(settings.rules)
    contracts = contracts_of(catalog, settings.reporting_currency)
    outcome, invalid = run_history(
        history,
        catalog,
        settings,
        scenario_rules,
        processes,
        pii_key=pii_key,
        models=compared_models(model, contracts),
    )
    report_outcome(invalid, outcome)
    comparison = compare(outcome.today, outcome.scenario, model, contracts)
    label = describe(overrides)
    print_comparison(comparison, label)
    if comparison.orders_without_rate:
        print(
            f"{comparison.orders_without_rate} orders without an exchange rate into "
            f"{comparison.currency} left out",
            file=sys.stderr,
        )
    if comparison.campaigns_without_rate:
        print(
            "no rate at the start of campaigns "
            f"{', '.join(comparison.campaigns_without_rate)}: their fees, retainers and bonuses "
            "are left out of the payouts",
            file=sys.stderr,
        )
    if out is not None:
        write_comparison_csv(comparison, out)
        print(f"comparison written to {out}", file=sys.stderr)
    if chart is not None:
        write_chart(comparison, chart, label)
        print(f"chart written to {chart}", file=sys.stderr)
    return 0
