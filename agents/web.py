"""HTTP views on the worker's web port: liveness and read-only SQL on the embedded engine.

The embedded engine allows one process per data dir, so while a worker runs,
`attribution sql` and the tests read through this view.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import generate_latest

from attribution.payouts import Period
from sinks.payouts import report_wire, run_payouts
from streams.app import Topology

READ_ONLY_PREFIXES = ("select", "with", "show", "describe", "desc", "explain", "exists")


def is_read_only(sql: str) -> bool:
    return sql.lstrip().lower().startswith(READ_ONLY_PREFIXES)


def _plain(value: Any) -> Any:
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def register(topology: Topology) -> None:
    app = topology.app

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "catalog_version": topology.catalog.version})

    @app.page("/metrics")
    class PrometheusMetrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(
                generate_latest(topology.metrics.registry), content_type="text/plain; version=0.0.4"
            )

    if not topology.owns_clickhouse:
        return

    @app.page("/payouts")
    class Payouts(View):
        """`attribution payouts` while this worker holds the engine: it closes the periods due
        and reports a month's statements (body: {"period": "YYYY-MM", "as_of": ISO 8601})."""

        async def post(self, request: Request) -> Response:
            try:
                body = json.loads(await request.text())
                period = Period.parse(body["period"])
                as_of = datetime.fromisoformat(body["as_of"])
                if as_of.tzinfo is None:
                    raise ValueError("as_of needs its UTC offset")
            except (ValueError, KeyError, TypeError) as error:
                return self.json({"error": f"bad request: {error}"}, status=400)
            lock_days = topology.settings.payout_lock_days
            report = await topology.clickhouse.writer().with_client(
                lambda client: run_payouts(client, period, as_of, lock_days)
            )
            return self.json(report_wire(report))

    @app.page("/sql")
    class ReadOnlySql(View):
        async def get(self, request: Request) -> Response:
            return self._run(request.query.get("q", ""))

        async def post(self, request: Request) -> Response:
            return self._run(await request.text())

        def _run(self, statement: str) -> Response:
            if not is_read_only(statement):
                return self.json({"error": "only read-only statements are served"}, status=400)
            try:
                columns, rows = topology.clickhouse.writer().query(statement)
            except Exception as error:
                return self.json({"error": str(error)}, status=400)
            return self.json(
                {"columns": columns, "rows": [[_plain(value) for value in row] for row in rows]}
            )
