"""A worker refuses to start on a history restated under other settings: `attribution worker
--processes 2` stops with exit code 2 and says which settings differ, rather than restarting its
sink forever or crediting orders under other rules than every stored one (docs/scenarios.md).

Its ClickHouse holds a settings manifest whose active version has a 7-day lookback; the worker
runs with today's 30 days. No broker is needed: the refusal comes before any Kafka connection,
and the stage processes, which never connect, are stopped with the service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.cli import _settings_refusal
from streams.restate import rules_json
from streams.settings import Settings
from streams.worker_process import free_port

pytestmark = pytest.mark.integration

# Run in a process of its own: the embedded engine's data dir is then free for the worker.
RECORD_VERSION_2 = """
import sys
from datetime import UTC, datetime
from sinks.clickhouse import connect
from sinks.migrations import migrate
client = connect(sys.argv[1])
migrate(client)
client.insert(
    "settings_versions",
    [[1, sys.argv[2], datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC),
      "credits_s1", "orders_s1", "kept"],
     [2, sys.argv[3], datetime(2026, 2, 1, tzinfo=UTC), None, "credits", "orders", "active"]],
    column_names=["version", "settings", "ruled_from", "ruled_to", "credits_table",
                  "orders_table", "state"],
)
client.close()
"""


def test_a_worker_with_other_settings_than_the_active_version_stops_the_service(
    tmp_path: Path,
) -> None:
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    today, restated = Settings(), Settings(lookback_days=7)
    subprocess.run(
        [sys.executable, "-c", RECORD_VERSION_2, dsn, rules_json(today), rules_json(restated)],
        check=True,
        timeout=120,
    )
    env = {
        **os.environ,
        "ATTRIBUTION_CLICKHOUSE_DSN": dsn,
        "ATTRIBUTION_DATA_DIR": str(tmp_path / "data"),
        "ATTRIBUTION_KAFKA_URL": "kafka://127.0.0.1:9",  # nothing listens: no topic is made
        "ATTRIBUTION_WEB_PORT": str(free_port()),
    }
    worker = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker", "--processes", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 2, worker.stderr[-2000:]
    assert (
        "not started: the stored credits follow settings version 2, and these settings differ: "
        "lookback_days 30 here, 7 there." in worker.stderr
    )
    assert "sink refused to start" in worker.stderr
    assert "sink exited with" not in worker.stderr  # not started again


def test_a_clickhouse_server_that_does_not_answer_yet_is_not_waited_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The sink holds its rows until the server answers, as it does in any outage.
    assert _settings_refusal(Settings(clickhouse_dsn="http://127.0.0.1:9")) is None
    assert capsys.readouterr().err.startswith("settings not compared with the stored history's: ")
