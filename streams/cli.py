"""The `attribution` command: worker, replay, backfill, sql, catalog load, erase, payouts,
scenario, restate, demo."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from attribution.catalog import StaticCatalog
from attribution.messages import Wire
from attribution.models import Model
from attribution.payouts import Period
from attribution.replay import LocalPipeline
from attribution.rows import CreditRow
from attribution.rules import ClickPolicy, CodePolicy
from attribution.scenario import Overrides
from schemas.catalog import CatalogError, CatalogFiles, read_catalog_dir
from schemas.events import Event, InvalidEvent, decode_event
from sinks.payouts import PAYOUT_COLUMNS
from streams.heap import cyclic_collection_paused, freeze_startup_heap
from streams.scenario import default_processes, run_scenario
from streams.settings import Settings

CREDIT_COLUMNS = (
    "order_id",
    "model",
    "touchpoint_event_id",
    "influencer_id",
    "campaign_id",
    "credit",
    "revenue_credit",
    "currency",
)


def _worker(settings: Settings) -> int:
    from agents import register_agents
    from streams.app import create_topology
    from streams.topics import ensure_topics

    if settings.role in ("all", "sink"):
        refusal = _settings_refusal(settings)
        if refusal is not None:
            from streams.supervisor import REFUSED_TO_START

            print(f"not started: {refusal}", file=sys.stderr)
            return REFUSED_TO_START
    asyncio.run(ensure_topics(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    topology = create_topology(settings)
    register_agents(topology)
    freeze_startup_heap()
    sys.argv = [
        "attribution",
        "worker",
        "--loglevel",
        settings.log_level,
        "--web-host",
        settings.web_host,
        "--web-port",
        str(settings.web_port),
    ]
    topology.app.main()
    return 0


def _settings_refusal(settings: Settings) -> str | None:
    """`settings_refusal` for the worker's ClickHouse, which it migrates as it will anyway. A
    server that does not answer yet is not waited for: the sink holds its rows until it does."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from sinks.clickhouse import connect
    from sinks.migrations import migrate
    from streams.restate import settings_refusal
    from streams.scenario import first_line

    try:
        client = connect(settings.clickhouse)
        try:
            migrate(client)
            return settings_refusal(client, settings)
        finally:
            client.close()
    except (ClickHouseError, OSError) as error:
        print(
            f"settings not compared with the stored history's: {first_line(error)}",
            file=sys.stderr,
        )
        return None


def read_events(path: Path, errors: list[str]) -> Iterator[Event]:
    """Valid events of a JSON-lines file in file order; invalid lines are reported, not fatal."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield decode_event(line)
            except InvalidEvent as error:
                errors.append(f"{path}:{number}: {error}")
                print(f"{path}:{number}: invalid event: {error}", file=sys.stderr)


def credit_record(row: CreditRow) -> list[str]:
    return [
        row.order_id,
        row.model,
        row.touchpoint_event_id,
        row.influencer_id,
        row.campaign_id,
        str(row.credit),
        str(row.revenue_credit),
        row.currency,
    ]


def write_credits_csv(rows: Sequence[CreditRow], out: Path) -> None:
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CREDIT_COLUMNS)
        writer.writerows(credit_record(row) for row in rows)


def _load_catalog(directory: Path | None, reporting_currency: str) -> StaticCatalog:
    from sinks.catalog_store import to_static_catalog

    files = CatalogFiles() if directory is None else read_catalog_dir(directory)
    return to_static_catalog(files, reporting_currency)


@cyclic_collection_paused()
def _replay(settings: Settings, events: Path, catalog_dir: Path | None, out: Path) -> int:
    pipeline = LocalPipeline(
        _load_catalog(catalog_dir, settings.reporting_currency),
        settings.rules,
        pii_key=settings.pii_key,
    )
    errors: list[str] = []
    pipeline.feed_all(read_events(events, errors))
    for rejection in pipeline.rejections:
        print(
            f"rejected {rejection.event_id}: {rejection.field}: {rejection.reason}", file=sys.stderr
        )
    final = pipeline.final_credits()
    write_credits_csv(final, out)
    orders = len({row.order_id for row in final})
    late = ", ".join(f"{count} {kind}" for kind, count in sorted(pipeline.late_events.items()))
    print(
        f"{orders} orders, {len(final)} credit rows written to {out}; "
        f"{len(errors)} invalid lines, {len(pipeline.rejections)} rejected events"
        + (f"; later than the allowed lateness: {late}" if late else ""),
        file=sys.stderr,
    )
    return 0


def query_worker(settings: Settings, sql: str, timeout: float = 10.0) -> dict[str, object]:
    """Run read-only SQL through a running worker (which owns the embedded engine)."""
    request = urllib.request.Request(
        f"http://{settings.web_host}:{settings.web_port}/sql", data=sql.encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            result: dict[str, object] = json.loads(response.read())
    except urllib.error.HTTPError as error:
        result = json.loads(error.read())
    return result


def run_sql(settings: Settings, sql: str) -> tuple[list[str], list[list[object]]]:
    """Through the worker when one serves the embedded engine, else directly."""
    try:
        result = query_worker(settings, sql)
    except (urllib.error.URLError, ConnectionError):
        from sinks.clickhouse import ClickHouseWriter, connect
        from sinks.migrations import migrate

        client = connect(settings.clickhouse)
        migrate(client)
        return ClickHouseWriter(client).query(sql)
    if "error" in result:
        raise RuntimeError(str(result["error"]))
    return list(result["columns"]), list(result["rows"])  # type: ignore[call-overload]


def _sql(settings: Settings, sql: str) -> int:
    try:
        columns, rows = run_sql(settings, sql)
    except Exception as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    writer = csv.writer(sys.stdout, delimiter="\t")
    writer.writerow(columns)
    writer.writerows(rows)
    return 0


def _catalog_load(settings: Settings, directory: Path) -> int:
    from sinks.catalog_store import publish_catalog

    try:
        files = read_catalog_dir(directory)
    except CatalogError as error:
        print(f"catalog not loaded: {error}", file=sys.stderr)
        return 1
    version = publish_catalog(settings.redis_url, settings.topic_prefix, files)
    print(
        f"catalog version {version}: {len(files.influencers)} influencers, "
        f"{len(files.campaigns)} campaigns, {len(files.codes)} codes, {len(files.links)} links, "
        f"{len(files.contracts)} contracts",
        file=sys.stderr,
    )
    return 0


def sql_string(value: str) -> str:
    r"""A ClickHouse string literal.

    >>> print(sql_string("o'brien\\x"))
    'o\'brien\\x'
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _erase(settings: Settings, customer_id: str) -> int:
    """Ask the workers to erase a customer: the journey stage moves what must stay (orders,
    credits) to a random pseudonym and forgets the rest; see docs/privacy.md."""
    import secrets

    from aiokafka import AIOKafkaProducer

    from attribution.messages import EraseCustomer, command_to_wire
    from streams.codecs import encode

    # Visitors linked to the customer that never clicked an influencer link are known to
    # ClickHouse only; the journey adds those its clicks came from.
    _, rows = run_sql(
        settings,
        "SELECT DISTINCT visitor_id FROM identity_links "
        f"WHERE customer_id = {sql_string(customer_id)}",
    )
    visitor_ids = tuple(sorted(str(row[0]) for row in rows))
    command = EraseCustomer(customer_id, f"erased-{secrets.token_hex(10)}", visitor_ids)

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(
                settings.topic("journey-commands"),
                key=customer_id.encode(),
                value=encode(command_to_wire(command)),
            )
        finally:
            await producer.stop()

    asyncio.run(send())
    print(
        f"erasure requested: the customer's journey, orders and {len(visitor_ids)} linked "
        "visitors are rewritten by the workers within seconds; `SELECT * FROM erasures` "
        "lists it once ClickHouse is rewritten",
        file=sys.stderr,
    )
    return 0


def payout_period(text: str) -> Period:
    try:
        return Period.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def aware_time(text: str) -> datetime:
    """An ISO 8601 time with its UTC offset: the run's "now" must not depend on the machine."""
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if instant.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (add Z or +01:00)")
    return instant


def print_statements(report: Wire) -> None:
    """A report's statements as a reader wants them: one block per influencer and currency."""
    current: tuple[str, ...] = ()
    for _, status, influencer, currency, campaign, kind, model, amount in report["lines"]:
        if (influencer, currency) != current[:2]:
            current = (influencer, currency)
            print(f"\n{influencer}  {currency}  {status}")
        label = kind.replace("_", " ") + (f" ({model})" if model else "")
        print(f"  {campaign:<24} {label:<32} {amount:>14}")


def payouts_report(settings: Settings, period: Period, as_of: datetime) -> Wire:
    """Through the worker when one serves the embedded engine (it closes the periods due on its
    own engine), else directly."""
    request = urllib.request.Request(
        f"http://{settings.web_host}:{settings.web_port}/payouts",
        data=json.dumps({"period": period.name, "as_of": as_of.isoformat()}).encode(),
        method="POST",
    )
    try:
        # Closing months of a large history takes a while; the worker finishes it regardless.
        with urllib.request.urlopen(request, timeout=600) as response:
            served: Wire = json.loads(response.read())
            return served
    except urllib.error.HTTPError as error:
        raise RuntimeError(json.loads(error.read())["error"]) from None
    except (urllib.error.URLError, ConnectionError):
        pass
    from sinks.clickhouse import connect
    from sinks.migrations import migrate
    from sinks.payouts import report_wire, run_payouts

    client = connect(settings.clickhouse)
    try:
        migrate(client)
        return report_wire(run_payouts(client, period, as_of, settings.payout_lock_days))
    finally:
        client.close()


def _payouts(settings: Settings, period: Period, as_of: datetime | None, out: Path | None) -> int:
    try:
        report = payouts_report(settings, period, as_of or datetime.now(UTC))
    except Exception as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for closed in report["closed_now"]:
        print(f"closed {closed}", file=sys.stderr)
    lock_date = report["lock_date"]
    status = (
        f"closed (lock date {lock_date})"
        if report["closed"]
        else f"open (closes on the first run from {lock_date})"
    )
    statements = sum(1 for line in report["lines"] if line[5] == "total")
    if out is not None:
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(PAYOUT_COLUMNS)
            writer.writerows(report["lines"])
        print(f"{statements} statements of {period}, {status}, written to {out}", file=sys.stderr)
        return 0
    print(f"payouts {period}: {status}")
    print_statements(report)
    if not statements:
        print("no statements")
    return 0


def _schemas_export(directory: Path) -> int:
    from schemas.events import export_json_schemas

    written = export_json_schemas(directory)
    print(f"{len(written)} JSON Schemas written to {directory}", file=sys.stderr)
    return 0


def positive_days(text: str) -> float:
    """A number of days above 0 that a duration can hold (an argparse type)."""
    try:
        days = float(text)
        timedelta(days=days)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    except OverflowError:
        raise argparse.ArgumentTypeError(f"too many days: {text!r}") from None
    if not days > 0:
        raise argparse.ArgumentTypeError(f"must be a number of days above 0: {text!r}")
    return days


def positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attribution", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser(
        "worker", help="run the pipeline's workers (settings from ATTRIBUTION_* env)"
    )
    worker.add_argument(
        "--processes",
        type=positive_int,
        help="stage processes beside one sink (default: the cores, at most the partitions); "
        "1 runs everything in one process",
    )
    replay = commands.add_parser("replay", help="attribute a JSON-lines file offline")
    replay.add_argument("events", type=Path)
    replay.add_argument("--catalog", type=Path)
    replay.add_argument("--out", type=Path, required=True)
    sql = commands.add_parser("sql", help="run read-only SQL against ClickHouse")
    sql.add_argument("statement")
    catalog = commands.add_parser("catalog", help="catalog commands")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    load = catalog_commands.add_parser("load", help="validate CSVs and publish them to workers")
    load.add_argument("directory", type=Path)
    schemas = commands.add_parser("schemas", help="event contracts for storefront developers")
    schemas_commands = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schemas_commands.add_parser("export", help="write one JSON Schema per event type")
    export.add_argument("directory", type=Path)
    erase = commands.add_parser("erase", help="remove a customer's personal data everywhere")
    erase.add_argument("--customer", required=True, help="the storefront's customer id")
    backfill = commands.add_parser(
        "backfill", help="load a JSON-lines history into running workers, by event time"
    )
    backfill.add_argument("events", type=Path)
    payouts = commands.add_parser(
        "payouts", help="close due payout periods, then print or write a month's statements"
    )
    payouts.add_argument("--period", type=payout_period, required=True, help="YYYY-MM (UTC)")
    payouts.add_argument(
        "--as-of", type=aware_time, help="the run's now, ISO 8601 with offset (default: now)"
    )
    payouts.add_argument("--out", type=Path, help="write the statements as CSV")
    scenario = commands.add_parser(
        "scenario", help="the stored history under other settings, compared with today's"
    )
    scenario.add_argument(
        "--lookback",
        type=positive_days,
        metavar="DAYS",
        help="how far before an order a click may be credited (today: ATTRIBUTION_LOOKBACK_DAYS)",
    )
    scenario.add_argument(
        "--half-life",
        type=positive_days,
        metavar="DAYS",
        help="time_decay's half-life (today: ATTRIBUTION_HALF_LIFE_DAYS)",
    )
    scenario.add_argument(
        "--code-policy",
        type=CodePolicy,
        choices=list(CodePolicy),
        help="who is credited when an order has a code (today: ATTRIBUTION_CODE_POLICY; a"
        " campaign's own code_policy still rules its codes)",
    )
    scenario.add_argument(
        "--click-policy",
        type=ClickPolicy,
        choices=list(ClickPolicy),
        help="what invalid and suspicious clicks earn (today: ATTRIBUTION_CLICK_POLICY)",
    )
    scenario.add_argument(
        "--model",
        type=Model,
        choices=list(Model),
        default=Model.LAST_CLICK,
        help="the model whose credits are compared (payouts follow each contract's own "
        "commission model); default last_click",
    )
    scenario.add_argument(
        "--history", type=Path, help="a JSON-lines file of events (default: read ClickHouse)"
    )
    scenario.add_argument(
        "--catalog",
        type=Path,
        help="catalog CSVs (default with --history: none; else the catalog stored in ClickHouse)",
    )
    scenario.add_argument("--out", type=Path, help="write the comparison as CSV")
    scenario.add_argument("--chart", type=Path, help="write an HTML bar chart per influencer")
    scenario.add_argument(
        "--processes", type=positive_int, default=default_processes(), help="default: cores"
    )
    restate = commands.add_parser(
        "restate", help="adopt new settings for the whole history: credits rebuilt, versioned"
    )
    restate.add_argument(
        "--settings", type=Path, required=True, help="an env file of ATTRIBUTION_* settings"
    )
    restate.add_argument(
        "--processes", type=positive_int, default=default_processes(), help="default: cores"
    )
    demo = commands.add_parser("demo", help="services + worker + synthetic storefront + report")
    demo.add_argument("--seconds", type=float, default=60.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    if args.command == "worker":
        from streams.supervisor import default_stage_processes, supervise

        processes = args.processes or (
            default_stage_processes(settings) if settings.role == "all" else 1
        )
        return _worker(settings) if processes == 1 else supervise(settings, processes)
    if args.command == "replay":
        return _replay(settings, args.events, args.catalog, args.out)
    if args.command == "sql":
        return _sql(settings, args.statement)
    if args.command == "catalog":
        return _catalog_load(settings, args.directory)
    if args.command == "schemas":
        return _schemas_export(args.directory)
    if args.command == "erase":
        return _erase(settings, args.customer)
    if args.command == "backfill":
        from streams.backfill import run_backfill

        return run_backfill(settings, args.events)
    if args.command == "payouts":
        return _payouts(settings, args.period, args.as_of, args.out)
    if args.command == "scenario":
        overrides = Overrides(args.lookback, args.half_life, args.code_policy, args.click_policy)
        return run_scenario(
            settings,
            overrides,
            args.model,
            args.history,
            args.catalog,
            args.out,
            args.chart,
            args.processes,
        )
    if args.command == "restate":
        from streams.restate import run_restate

        return run_restate(settings, args.settings, args.processes)
    from streams.demo import run_demo

    return run_demo(settings, seconds=args.seconds)


if __name__ == "__main__":
    sys.exit(main())
